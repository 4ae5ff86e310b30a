//! Lead qualification from what the lead said: budget, authority, need, timeline (BANT) and
//! sentiment, each with the quote it came from, an overall 0-100 score and a band.
//!
//! The default [`RuleScorer`] is deterministic and explainable: phrase and number rules,
//! negation-aware, no model and no network. Another scorer (an LLM, a CRM's) can stand behind
//! the [`LeadScorer`] trait. Later answers override earlier ones for the same criterion:
//! people correct themselves ("actually, my boss signs off").

mod budget;
pub mod date;
mod rules;
mod text;
mod timeline;

pub use budget::{Budget, Currency, parse_budget};
pub use date::Date;
pub use rules::{Authority, parse_authority, parse_need, sentiment};
pub use timeline::{Timeline, parse_timeline};

/// What a question asked about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Category {
    /// Money.
    Budget,
    /// Who decides.
    Authority,
    /// The problem to solve.
    Need,
    /// When.
    Timeline,
    /// Anything else.
    Other,
}

/// One thing the lead said (a final transcript), and what it answered.
#[derive(Debug, Clone, PartialEq)]
pub struct LeadAnswer {
    /// The words.
    pub text: String,
    /// When it was said, ms (the transcript's clock).
    pub at_ms: u64,
    /// The category of the question it answers, if known.
    pub category: Option<Category>,
}

/// A quote that produced a criterion's value.
#[derive(Debug, Clone, PartialEq)]
pub struct Evidence {
    /// `budget`, `authority`, `need`, `timeline` or `sentiment`.
    pub criterion: &'static str,
    /// What the lead said.
    pub quote: String,
    /// When, ms.
    pub at_ms: u64,
}

/// hot / warm / cold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Band {
    /// 70 and above.
    Hot,
    /// 40 to 69.
    Warm,
    /// Below 40.
    Cold,
}

impl Band {
    /// `hot`, `warm`, `cold`.
    pub fn as_str(self) -> &'static str {
        match self {
            Band::Hot => "hot",
            Band::Warm => "warm",
            Band::Cold => "cold",
        }
    }
}

/// Points each criterion earned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Points {
    /// 25 for an amount or a range.
    pub budget: i32,
    /// 25 decision maker, 15 influencer.
    pub authority: i32,
    /// 25 when a need is stated.
    pub need: i32,
    /// 25 within 90 days of the meeting, 15 within 180, 5 later.
    pub timeline: i32,
    /// +5 positive, -5 negative.
    pub sentiment: i32,
}

/// The qualification so far.
#[derive(Debug, Clone, PartialEq)]
pub struct LeadScore {
    /// Stated budget (`Some(Budget::NoBudget)` when the lead said there is none).
    pub budget: Option<Budget>,
    /// Stated authority.
    pub authority: Option<Authority>,
    /// Whether a need was stated (`None`: not discussed).
    pub need: Option<bool>,
    /// Stated timeline.
    pub timeline: Option<Timeline>,
    /// Mean sentiment of the answers that carry any, -1..=1.
    pub sentiment: f32,
    /// Per-criterion points.
    pub points: Points,
    /// 0-100.
    pub score: u32,
    /// From the score.
    pub band: Band,
    /// How the score and band came about, for people to check.
    pub rule: String,
    /// The quotes behind each value.
    pub evidence: Vec<Evidence>,
}

/// Scores a conversation.
pub trait LeadScorer: Send + Sync {
    /// The score given everything the lead said so far, on a meeting held on `meeting_day`.
    fn score(&self, answers: &[LeadAnswer], meeting_day: Date) -> LeadScore;
}

/// The default: rules over phrases and numbers.
#[derive(Debug, Clone, Copy, Default)]
pub struct RuleScorer;

fn quote(text: &str) -> String {
    let t = text.trim();
    match t.char_indices().nth(240) {
        Some((i, _)) => format!("{}…", &t[..i]),
        None => t.to_owned(),
    }
}

impl LeadScorer for RuleScorer {
    fn score(&self, answers: &[LeadAnswer], meeting_day: Date) -> LeadScore {
        let mut budget = None;
        let mut authority = None;
        let mut need = None;
        let mut timeline = None;
        let mut evidence: Vec<Evidence> = Vec::new();
        let mut set_evidence = |criterion: &'static str, a: &LeadAnswer| {
            evidence.retain(|e| e.criterion != criterion);
            evidence.push(Evidence {
                criterion,
                quote: quote(&a.text),
                at_ms: a.at_ms,
            });
        };
        let (mut feeling, mut felt) = (0.0f32, 0u32);
        for a in answers {
            if let Some(b) = parse_budget(&a.text, a.category == Some(Category::Budget)) {
                budget = Some(b);
                set_evidence("budget", a);
            }
            if let Some(x) = parse_authority(&a.text) {
                authority = Some(x);
                set_evidence("authority", a);
            }
            if let Some(n) = parse_need(&a.text) {
                need = Some(n);
                set_evidence("need", a);
            }
            if let Some(t) = parse_timeline(&a.text, meeting_day) {
                timeline = Some(t);
                set_evidence("timeline", a);
            }
            let s = sentiment(&a.text);
            if s != 0.0 {
                feeling += s;
                felt += 1;
            }
        }
        let sentiment = if felt == 0 {
            0.0
        } else {
            feeling / felt as f32
        };
        let points = Points {
            budget: match budget {
                Some(Budget::Amount { .. } | Budget::Range { .. }) => 25,
                _ => 0,
            },
            authority: match authority {
                Some(Authority::DecisionMaker) => 25,
                Some(Authority::Influencer) => 15,
                _ => 0,
            },
            need: if need == Some(true) { 25 } else { 0 },
            timeline: match timeline {
                Some(Timeline::By(d)) => match d.days() - meeting_day.days() {
                    ..=90 => 25,
                    91..=180 => 15,
                    _ => 5,
                },
                _ => 0,
            },
            sentiment: if sentiment > 0.2 {
                5
            } else if sentiment < -0.2 {
                -5
            } else {
                0
            },
        };
        let sum =
            points.budget + points.authority + points.need + points.timeline + points.sentiment;
        let score = sum.clamp(0, 100) as u32;
        let band = match score {
            70.. => Band::Hot,
            40..=69 => Band::Warm,
            _ => Band::Cold,
        };
        let threshold = match band {
            Band::Hot => ">= 70",
            Band::Warm => "40-69",
            Band::Cold => "< 40",
        };
        let rule = format!(
            "{} ({threshold}): budget {} + authority {} + need {} + timeline {} + sentiment {} = {score}",
            band.as_str(),
            points.budget,
            points.authority,
            points.need,
            points.timeline,
            points.sentiment
        );
        LeadScore {
            budget,
            authority,
            need,
            timeline,
            sentiment,
            points,
            score,
            band,
            rule,
            evidence,
        }
    }
}
