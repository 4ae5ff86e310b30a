//! Authority, need and sentiment from phrases, negation-aware.

use super::text::{find_phrase, negated, words};

/// Who decides, as far as the lead says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Authority {
    /// Makes the decision.
    DecisionMaker,
    /// Shapes it; someone else signs.
    Influencer,
    /// No part in the decision.
    NoAuthority,
}

impl Authority {
    /// `decision_maker`, `influencer`, `no_authority`.
    pub fn as_str(self) -> &'static str {
        match self {
            Authority::DecisionMaker => "decision_maker",
            Authority::Influencer => "influencer",
            Authority::NoAuthority => "no_authority",
        }
    }
}

const DECIDES: [&str; 16] = [
    "final call",
    "final say",
    "final decision",
    "i decide",
    "i make the decision",
    "decision maker",
    "my call",
    "my decision",
    "i sign off",
    "i approve",
    "i own the budget",
    "i'm the ceo",
    "i am the ceo",
    "i'm the founder",
    "i own the company",
    "up to me",
];
const INFLUENCES: [&str; 16] = [
    "check with",
    "run it by",
    "need approval",
    "get approval",
    "my boss",
    "my manager",
    "the board",
    "committee",
    "i recommend",
    "i'll recommend",
    "i'd recommend",
    "would recommend",
    "bring it to",
    "decide with",
    "sign off from",
    "loop in",
];
const NO_SAY: [&str; 8] = [
    "intern",
    "no say",
    "not my decision",
    "not my call",
    "not up to me",
    "just gathering",
    "not involved in",
    "someone else decides",
];

/// The authority an answer implies, if any: "no say" beats "check with" beats "final call",
/// and a negated decision phrase ("I don't make the final call") counts as influencer.
pub fn parse_authority(text: &str) -> Option<Authority> {
    let w = words(text);
    let hit = |phrases: &[&str], allow_negated: bool| {
        phrases.iter().any(|p| {
            find_phrase(&w, p)
                .into_iter()
                .any(|at| allow_negated || !negated(&w, at, 3))
        })
    };
    let negated_decides = DECIDES
        .iter()
        .any(|p| find_phrase(&w, p).into_iter().any(|at| negated(&w, at, 3)));
    // Phrases that already contain a negation ("not my call") match as written.
    if hit(&NO_SAY, true) {
        Some(Authority::NoAuthority)
    } else if hit(&INFLUENCES, false) || negated_decides {
        Some(Authority::Influencer)
    } else if hit(&DECIDES, false) {
        Some(Authority::DecisionMaker)
    } else {
        None
    }
}

const PAIN: [&str; 22] = [
    "problem*",
    "issue*",
    "struggl*",
    "pain*",
    "frustrat*",
    "slow",
    "manual*",
    "buried",
    "can't keep up",
    "losing",
    "waste*",
    "too long",
    "bottleneck*",
    "we need",
    "need a",
    "looking for",
    "broken",
    "hard to",
    "difficult",
    "mess",
    "overwhelm*",
    "complain*",
];
const CONTENT: [&str; 10] = [
    "working okay",
    "working ok",
    "working fine",
    "works fine",
    "works well",
    "happy with",
    "don't need",
    "do not need",
    "fine as is",
    "not looking",
];

/// Whether an answer states a need: pain or requirement phrases for, contentment phrases
/// against; a negated phrase counts the other way ("not a problem" is no need, "it's not that
/// we don't need it" is a need).
pub fn parse_need(text: &str) -> Option<bool> {
    let w = words(text);
    let mut score = 0i32;
    let mut seen = false;
    for p in PAIN {
        for at in find_phrase(&w, p) {
            seen = true;
            score += if negated(&w, at, 3) { -1 } else { 1 };
        }
    }
    for p in CONTENT {
        for at in find_phrase(&w, p) {
            seen = true;
            // The phrase's own negation ("don't need") is part of it; look before that.
            score += if negated(&w, at, 3) { 1 } else { -1 };
        }
    }
    seen.then_some(score > 0)
}

const POSITIVE: [&str; 18] = [
    "great",
    "good",
    "love",
    "excellent",
    "happy",
    "excited",
    "interested",
    "perfect",
    "helpful",
    "impressive",
    "nice",
    "like",
    "awesome",
    "reasonable",
    "promising",
    "useful",
    "glad",
    "fantastic",
];
const NEGATIVE: [&str; 14] = [
    "bad",
    "terrible",
    "hate",
    "expensive",
    "frustrated",
    "annoying",
    "disappointed",
    "worried",
    "concerned",
    "skeptical",
    "unhappy",
    "awful",
    "pricey",
    "doubt",
];

/// Sentiment of an answer in -1..=1 (0 when it says nothing either way), with negation
/// flipping a word within the three before it.
pub fn sentiment(text: &str) -> f32 {
    let w = words(text);
    let (mut pos, mut neg) = (0.0f32, 0.0f32);
    for (i, word) in w.iter().enumerate() {
        let polarity = if POSITIVE.contains(&word.as_str()) {
            1.0
        } else if NEGATIVE.contains(&word.as_str()) {
            -1.0
        } else {
            continue;
        };
        let p = if negated(&w, i, 3) {
            -polarity
        } else {
            polarity
        };
        if p > 0.0 {
            pos += 1.0;
        } else {
            neg += 1.0;
        }
    }
    if pos + neg == 0.0 {
        0.0
    } else {
        (pos - neg) / (pos + neg)
    }
}
