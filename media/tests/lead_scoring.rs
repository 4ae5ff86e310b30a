//! The rule-based lead scorer on written answers: at least thirty, across every criterion,
//! with negation, ranges, spelled-out numbers, relative dates across a year boundary and "no
//! budget". Then whole conversations scored into a band with evidence.

use conclave_media::lead::{
    Authority, Band, Budget, Category, Date, LeadAnswer, LeadScorer, RuleScorer, Timeline,
    parse_authority, parse_budget, parse_need, parse_timeline, sentiment,
};

fn day(y: i32, m: u32, d: u32) -> Date {
    Date::new(y, m, d).unwrap()
}

fn amount(value: f64, currency: &'static str) -> Option<Budget> {
    Some(Budget::Amount { value, currency })
}

fn range(low: f64, high: f64, currency: &'static str) -> Option<Budget> {
    Some(Budget::Range {
        low,
        high,
        currency,
    })
}

#[test]
fn budget_answers() {
    let cases: [(&str, Option<Budget>); 12] = [
        (
            "We set aside about eighty thousand for the first year.",
            amount(80_000.0, "USD"),
        ),
        ("Probably 80k, give or take.", amount(80_000.0, "USD")),
        (
            "The budget is $15,000 per quarter.",
            amount(15_000.0, "USD"),
        ),
        (
            "Somewhere in the range of twenty to thirty thousand.",
            range(20_000.0, 30_000.0, "USD"),
        ),
        (
            "Between 40k and 60k euros, depending on the rollout.",
            range(40_000.0, 60_000.0, "EUR"),
        ),
        (
            "We could stretch to £120,000 if it replaces two tools.",
            amount(120_000.0, "GBP"),
        ),
        (
            "Around one hundred and fifty thousand dollars.",
            amount(150_000.0, "USD"),
        ),
        ("Half a million over three years.", amount(500_000.0, "USD")),
        (
            "Honestly, there is no budget for this yet.",
            Some(Budget::NoBudget),
        ),
        (
            "We don't have a budget, it would have to come out of next year's plan.",
            Some(Budget::NoBudget),
        ),
        ("We have 40 people on the team.", None),
        ("I'm not sure what you mean.", None),
    ];
    for (text, want) in cases {
        assert_eq!(parse_budget(text, true), want, "{text:?}");
    }
    // Outside a budget question, a bare number needs a currency or a money word.
    assert_eq!(parse_budget("We have about 300 seats.", false), None);
    assert_eq!(
        parse_budget("We'd spend around 50 thousand.", false),
        amount(50_000.0, "USD")
    );
}

#[test]
fn authority_answers() {
    let cases: [(&str, Option<Authority>); 9] = [
        (
            "I make the final call on tools like this.",
            Some(Authority::DecisionMaker),
        ),
        (
            "It's my decision, I own the budget.",
            Some(Authority::DecisionMaker),
        ),
        (
            "I need to check with my boss first.",
            Some(Authority::Influencer),
        ),
        (
            "I'd recommend it, but the board signs off.",
            Some(Authority::Influencer),
        ),
        (
            "I don't make the final call, our CFO does.",
            Some(Authority::Influencer),
        ),
        (
            "I'm an intern, just collecting options.",
            Some(Authority::NoAuthority),
        ),
        (
            "Honestly it's not my call at all.",
            Some(Authority::NoAuthority),
        ),
        (
            "We decide with finance above fifty thousand.",
            Some(Authority::Influencer),
        ),
        ("We use spreadsheets today.", None),
    ];
    for (text, want) in cases {
        assert_eq!(parse_authority(text), want, "{text:?}");
    }
}

#[test]
fn need_answers() {
    let cases: [(&str, Option<bool>); 8] = [
        (
            "Urgent issues get buried under routine questions.",
            Some(true),
        ),
        ("We're struggling to keep up with the volume.", Some(true)),
        (
            "Things are working okay for now, to be honest.",
            Some(false),
        ),
        ("It's not a problem for us.", Some(false)),
        ("It's not that we don't need it.", Some(true)),
        ("We're happy with what we have.", Some(false)),
        ("Our team wastes hours on manual triage.", Some(true)),
        ("We have offices in Lyon and Leeds.", None),
    ];
    for (text, want) in cases {
        assert_eq!(parse_need(text), want, "{text:?}");
    }
}

#[test]
fn timeline_answers_across_a_year_boundary() {
    let meeting = day(2026, 12, 1); // a Tuesday
    let cases: [(&str, Option<Timeline>); 9] = [
        (
            "We'd like to be live before the end of March.",
            Some(Timeline::By(day(2027, 3, 31))),
        ),
        (
            "By Friday I can tell you more.",
            Some(Timeline::By(day(2026, 12, 4))),
        ),
        (
            "End of next quarter at the latest.",
            Some(Timeline::By(day(2027, 3, 31))),
        ),
        ("Q2 next year.", Some(Timeline::By(day(2027, 6, 30)))),
        (
            "Within the month, ideally.",
            Some(Timeline::By(day(2026, 12, 31))),
        ),
        ("In six weeks.", Some(Timeline::By(day(2027, 1, 12)))),
        ("Early next year.", Some(Timeline::By(day(2027, 3, 31)))),
        ("No rush, maybe sometime.", Some(Timeline::NoTimeline)),
        (
            "By the end of this year.",
            Some(Timeline::By(day(2026, 12, 31))),
        ),
    ];
    for (text, want) in cases {
        assert_eq!(parse_timeline(text, meeting), want, "{text:?}");
    }
    // The same words a month earlier resolve into the same year.
    assert_eq!(
        parse_timeline("by the end of March", day(2026, 2, 10)),
        Some(Timeline::By(day(2026, 3, 31)))
    );
}

#[test]
fn sentiment_answers() {
    assert!(sentiment("That sounds great, I'm excited about this.") > 0.5);
    assert!(sentiment("It seems expensive and I'm worried about the migration.") < -0.5);
    assert!(sentiment("It's not bad at all.") > 0.0);
    assert!(sentiment("I'm not happy with the current tool.") < 0.0);
    assert_eq!(sentiment("We have forty people."), 0.0);
}

fn conversation(lines: &[(&str, Category)]) -> Vec<LeadAnswer> {
    lines
        .iter()
        .enumerate()
        .map(|(i, (text, category))| LeadAnswer {
            text: (*text).into(),
            at_ms: 10_000 * (i as u64 + 1),
            category: Some(*category),
        })
        .collect()
}

#[test]
fn a_qualified_lead_is_hot_with_evidence() {
    let answers = conversation(&[
        (
            "Urgent tickets get buried and customers complain.",
            Category::Need,
        ),
        (
            "We have about eighty thousand for the first year.",
            Category::Budget,
        ),
        (
            "I make the final call, though finance signs above fifty thousand.",
            Category::Authority,
        ),
        (
            "We'd want to be live by the end of February.",
            Category::Timeline,
        ),
        ("Sounds great, thanks.", Category::Other),
    ]);
    let score = RuleScorer.score(&answers, day(2026, 12, 1));
    assert_eq!(score.budget, amount(80_000.0, "USD"));
    // "finance signs above" is not an influencer phrase: a decision maker with a limit.
    assert_eq!(score.authority, Some(Authority::DecisionMaker));
    assert_eq!(score.need, Some(true));
    assert_eq!(score.timeline, Some(Timeline::By(day(2027, 2, 28))));
    assert_eq!(score.band, Band::Hot);
    assert_eq!(score.score, 100);
    assert!(
        score
            .rule
            .starts_with("hot (>= 70): budget 25 + authority 25"),
        "{}",
        score.rule
    );
    let budget_quote = score
        .evidence
        .iter()
        .find(|e| e.criterion == "budget")
        .unwrap();
    assert_eq!(budget_quote.at_ms, 20_000);
    assert!(budget_quote.quote.contains("eighty thousand"));
}

#[test]
fn an_unqualified_lead_is_cold_and_corrections_win() {
    let answers = conversation(&[
        ("Things are working okay for now.", Category::Need),
        ("There is no budget for this.", Category::Budget),
        ("I make the final call.", Category::Authority),
        (
            "Actually, I need to check with my manager.",
            Category::Authority,
        ),
        ("No rush, really.", Category::Timeline),
        ("Honestly it all seems expensive.", Category::Other),
    ]);
    let score = RuleScorer.score(&answers, day(2026, 12, 1));
    assert_eq!(score.budget, Some(Budget::NoBudget));
    assert_eq!(
        score.authority,
        Some(Authority::Influencer),
        "the later answer wins"
    );
    assert_eq!(score.need, Some(false));
    assert_eq!(score.timeline, Some(Timeline::NoTimeline));
    assert_eq!(score.points.sentiment, -5);
    assert_eq!(score.score, 10);
    assert_eq!(score.band, Band::Cold);
    let authority = score
        .evidence
        .iter()
        .find(|e| e.criterion == "authority")
        .unwrap();
    assert!(authority.quote.contains("check with my manager"));
}

#[test]
fn a_lead_with_a_later_timeline_is_warm() {
    let answers = conversation(&[
        (
            "Our reporting is a mess, we need a better tool.",
            Category::Need,
        ),
        ("Probably 20 to 30k.", Category::Budget),
        ("I'd recommend it to our director.", Category::Authority),
        ("Sometime in Q4 next year.", Category::Timeline),
    ]);
    let score = RuleScorer.score(&answers, day(2026, 12, 1));
    assert_eq!(score.budget, range(20_000.0, 30_000.0, "USD"));
    assert_eq!(score.timeline, Some(Timeline::By(day(2027, 12, 31))));
    assert_eq!(score.points.timeline, 5);
    assert_eq!(score.score, 25 + 15 + 25 + 5);
    assert_eq!(score.band, Band::Hot);
    // Without the budget, the same lead is warm.
    let score = RuleScorer.score(&answers[2..], day(2026, 12, 1));
    assert_eq!(score.band, Band::Cold);
    let score = RuleScorer.score(&[answers[0].clone(), answers[2].clone()], day(2026, 12, 1));
    assert_eq!((score.score, score.band), (40, Band::Warm));
}
