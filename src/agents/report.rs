//! A score and a summary as the API's JSON.

use conclave_media::lead::{Authority, Band, Budget, LeadScore, Timeline};
use serde_json::{Value, json};

/// `{"budget": ..., "authority": ..., "need": ..., "timeline_by": ..., "sentiment": ...,
/// "score": ..., "band": ..., "rule": ..., "points": ..., "evidence": [...]}`.
pub fn score_json(s: &LeadScore) -> Value {
    let budget = match &s.budget {
        Some(Budget::Amount { value, currency }) => {
            json!({"kind": "amount", "amount": value, "currency": currency})
        }
        Some(Budget::Range {
            low,
            high,
            currency,
        }) => json!({"kind": "range", "min": low, "max": high, "currency": currency}),
        Some(Budget::NoBudget) => json!({"kind": "none"}),
        None => Value::Null,
    };
    let authority = s.authority.map(|a| match a {
        Authority::DecisionMaker => "decision_maker",
        Authority::Influencer => "influencer",
        Authority::NoAuthority => "no_authority",
    });
    let timeline_by = match &s.timeline {
        Some(Timeline::By(d)) => Value::String(d.to_string()),
        _ => Value::Null,
    };
    json!({
        "budget": budget,
        "authority": authority,
        "need": s.need,
        "timeline_by": timeline_by,
        "no_timeline": matches!(s.timeline, Some(Timeline::NoTimeline)),
        "sentiment": (s.sentiment * 100.0).round() / 100.0,
        "score": s.score,
        "band": s.band.as_str(),
        "rule": s.rule,
        "points": {
            "budget": s.points.budget,
            "authority": s.points.authority,
            "need": s.points.need,
            "timeline": s.points.timeline,
            "sentiment": s.points.sentiment,
        },
        "evidence": s.evidence.iter().map(|e| json!({
            "criterion": e.criterion,
            "quote": e.quote,
            "at_ms": e.at_ms,
        })).collect::<Vec<_>>(),
    })
}

/// The post-meeting summary: key points (with the quotes behind them), action items and a
/// next step, all from the score.
pub fn summary_json(s: &LeadScore) -> Value {
    let quote = |c: &str| {
        s.evidence
            .iter()
            .rev()
            .find(|e| e.criterion == c)
            .map(|e| format!(" (\"{}\")", e.quote))
            .unwrap_or_default()
    };
    let mut key_points = Vec::new();
    let mut actions = Vec::new();
    match &s.budget {
        Some(Budget::Amount { value, currency }) => key_points.push(format!(
            "Budget about {value:.0} {currency}{}",
            quote("budget")
        )),
        Some(Budget::Range {
            low,
            high,
            currency,
        }) => key_points.push(format!(
            "Budget between {low:.0} and {high:.0} {currency}{}",
            quote("budget")
        )),
        Some(Budget::NoBudget) => {
            key_points.push(format!("No budget set{}", quote("budget")));
            actions.push("Help the lead build a business case for a budget".to_owned());
        }
        None => actions.push("Find out the budget".to_owned()),
    }
    match s.authority {
        Some(Authority::DecisionMaker) => {
            key_points.push(format!("Speaks for the decision{}", quote("authority")))
        }
        Some(a) => {
            key_points.push(format!(
                "{}{}",
                if a == Authority::Influencer {
                    "Shares the decision with others"
                } else {
                    "Does not make the decision"
                },
                quote("authority")
            ));
            actions.push("Bring the decision maker into the next meeting".to_owned());
        }
        None => actions.push("Find out who makes the decision".to_owned()),
    }
    match s.need {
        Some(true) => key_points.push(format!("Has a stated need{}", quote("need"))),
        Some(false) => key_points.push(format!("No pressing need{}", quote("need"))),
        None => actions.push("Explore what problem they need solved".to_owned()),
    }
    match &s.timeline {
        Some(Timeline::By(d)) => {
            key_points.push(format!("Wants to be live by {d}{}", quote("timeline")))
        }
        Some(Timeline::NoTimeline) => key_points.push("No fixed timeline".to_owned()),
        None => actions.push("Agree on a timeline".to_owned()),
    }
    let next_step = match s.band {
        Band::Hot => "Send a proposal and book the next meeting this week",
        Band::Warm => "Follow up on the open questions before proposing",
        Band::Cold => "Keep in touch; not ready to buy yet",
    };
    json!({
        "key_points": key_points,
        "action_items": actions,
        "next_step": next_step,
        "score": s.score,
        "band": s.band.as_str(),
    })
}
