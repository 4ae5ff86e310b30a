//! What the agent says, in what order: greet, ask the question set in order, follow up when an
//! answer lacks what its category needs, acknowledge briefly, and close with a spoken summary.
//! Pure: answers in, the next thing to say out. [`crate::turns`] decides *when*.

use crate::lead::{
    Authority, Budget, Category, Date, LeadAnswer, LeadScore, Timeline, parse_authority,
    parse_budget, parse_need, parse_timeline,
};

/// One question of a set.
#[derive(Debug, Clone, PartialEq)]
pub struct Question {
    /// What the agent asks.
    pub text: String,
    /// What it is about.
    pub category: Category,
    /// Asked once when the answer lacks what the category needs.
    pub follow_up: Option<String>,
}

/// A meeting's questions.
#[derive(Debug, Clone, PartialEq)]
pub struct Script {
    /// Opening line; `{name}` becomes the lead's name (or is dropped).
    pub greeting: String,
    /// Asked in order.
    pub questions: Vec<Question>,
    /// Said after the summary.
    pub closing: String,
}

/// What kind of line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SayKind {
    /// Greeting with the first question.
    Greeting,
    /// A question (after a short acknowledgement of the last answer).
    Question,
    /// The follow-up of the current question.
    FollowUp,
    /// The current question again, shorter, after silence.
    Reprompt,
    /// The summary and the closing line; the conversation is over.
    Summary,
}

impl SayKind {
    /// `greeting`, `question`, `follow_up`, `reprompt`, `summary`.
    pub fn as_str(self) -> &'static str {
        match self {
            SayKind::Greeting => "greeting",
            SayKind::Question => "question",
            SayKind::FollowUp => "follow_up",
            SayKind::Reprompt => "reprompt",
            SayKind::Summary => "summary",
        }
    }
}

/// A line to speak.
#[derive(Debug, Clone, PartialEq)]
pub struct Say {
    /// The words.
    pub text: String,
    /// What it is.
    pub kind: SayKind,
    /// Whether an answer is expected after it.
    pub question: bool,
    /// The question it asks (index into the script), if any.
    pub index: Option<usize>,
}

/// Where the conversation is.
#[derive(Debug, Clone)]
pub struct Conversation {
    script: Script,
    lead_name: Option<String>,
    day: Date,
    /// Index of the question being asked; `None` before the greeting.
    current: Option<usize>,
    followed_up: bool,
    answers: Vec<LeadAnswer>,
    /// Everything said to the current question so far (an answer may come in pieces).
    pending: String,
    done: bool,
    acks: usize,
    /// The agent already acknowledged the answer aloud (at the end of the turn, before the
    /// words were transcribed): the next line starts without "Thanks.".
    acknowledged: bool,
}

const ACKS: [&str; 4] = ["Thanks.", "Got it.", "Okay, thank you.", "Understood."];

fn needs_follow_up(category: Category, text: &str, day: Date) -> bool {
    match category {
        Category::Budget => parse_budget(text, true).is_none(),
        Category::Authority => parse_authority(text).is_none(),
        Category::Need => parse_need(text).is_none(),
        Category::Timeline => parse_timeline(text, day).is_none(),
        Category::Other => false,
    }
}

impl Conversation {
    /// A conversation with `lead_name` (if known) on `day`, the meeting's date.
    pub fn new(script: Script, lead_name: Option<String>, day: Date) -> Self {
        Self {
            script,
            lead_name: lead_name
                .map(|n| n.trim().to_owned())
                .filter(|n| !n.is_empty()),
            day,
            current: None,
            followed_up: false,
            answers: Vec::new(),
            pending: String::new(),
            done: false,
            acks: 0,
            acknowledged: false,
        }
    }

    /// The greeting and the first question (or the summary, for an empty set).
    pub fn opening(&mut self) -> Say {
        let greeting = match &self.lead_name {
            Some(n) => self.script.greeting.replace("{name}", n),
            None => self
                .script
                .greeting
                .replace(" {name}", "")
                .replace("{name}", ""),
        };
        if self.script.questions.is_empty() {
            return self.summary(Some(greeting));
        }
        self.current = Some(0);
        Say {
            text: format!("{} {}", greeting.trim(), self.script.questions[0].text)
                .trim()
                .to_owned(),
            kind: SayKind::Greeting,
            question: true,
            index: Some(0),
        }
    }

    /// What the lead said so far, with the category of the question each answered.
    pub fn answers(&self) -> &[LeadAnswer] {
        &self.answers
    }

    /// Whether the closing has been said.
    pub fn finished(&self) -> bool {
        self.done
    }

    /// The question being asked, if any.
    pub fn current(&self) -> Option<usize> {
        self.current
    }

    /// How many questions there are.
    pub fn len(&self) -> usize {
        self.script.questions.len()
    }

    /// Whether the set has no questions.
    pub fn is_empty(&self) -> bool {
        self.script.questions.is_empty()
    }

    fn category(&self) -> Option<Category> {
        self.current
            .and_then(|i| self.script.questions.get(i))
            .map(|q| q.category)
    }

    /// Records words the lead said (a final transcript) at `at_ms`. Anything said before the
    /// first question or after the last is kept without a category.
    pub fn hear(&mut self, text: &str, at_ms: u64) {
        let text = text.trim();
        if text.is_empty() {
            return;
        }
        self.answers.push(LeadAnswer {
            text: text.to_owned(),
            at_ms,
            category: if self.done { None } else { self.category() },
        });
        if !self.pending.is_empty() {
            self.pending.push(' ');
        }
        self.pending.push_str(text);
    }

    /// The answer was acknowledged aloud already; the next line skips its acknowledgement.
    pub fn acknowledged(&mut self) {
        self.acknowledged = true;
    }

    /// Words the lead has said to the current question so far.
    pub fn answer_words(&self) -> usize {
        self.pending.split_whitespace().count()
    }

    /// Whether the lead has said anything to the current question.
    pub fn has_answer(&self) -> bool {
        !self.pending.is_empty()
    }

    /// The lead's turn is over: what to say next (`score` is the score after their answer,
    /// for the summary). `None` once the conversation is finished.
    pub fn next(&mut self, score: &LeadScore) -> Option<Say> {
        if self.done {
            return None;
        }
        let i = self.current?;
        let q = self.script.questions[i].clone();
        let answer = std::mem::take(&mut self.pending);
        if !self.followed_up
            && let Some(f) = &q.follow_up
            && needs_follow_up(q.category, &answer, self.day)
        {
            self.followed_up = true;
            self.acknowledged = false;
            return Some(Say {
                text: f.clone(),
                kind: SayKind::FollowUp,
                question: true,
                index: Some(i),
            });
        }
        Some(self.advance(score, true))
    }

    /// Nobody answered the current question: ask it again, shorter.
    pub fn reprompt(&self) -> Option<Say> {
        let i = self.current?;
        if self.done {
            return None;
        }
        Some(Say {
            text: format!(
                "Sorry, I didn't catch that. {}",
                self.script.questions[i].text
            ),
            kind: SayKind::Reprompt,
            question: true,
            index: Some(i),
        })
    }

    /// Still no answer: go on to the next question.
    pub fn move_on(&mut self, score: &LeadScore) -> Option<Say> {
        if self.done || self.current.is_none() {
            return None;
        }
        self.pending.clear();
        Some(self.advance(score, false))
    }

    fn advance(&mut self, score: &LeadScore, acknowledge: bool) -> Say {
        let next = self.current.map_or(0, |i| i + 1);
        self.followed_up = false;
        let spoken = std::mem::take(&mut self.acknowledged);
        let ack = if acknowledge && spoken {
            None
        } else if acknowledge {
            let a = ACKS[self.acks % ACKS.len()];
            self.acks += 1;
            Some(a.to_owned())
        } else {
            Some("Let's move on.".to_owned())
        };
        if next >= self.script.questions.len() {
            return self.summary(ack);
        }
        self.current = Some(next);
        let text = format!(
            "{} {}",
            ack.unwrap_or_default(),
            self.script.questions[next].text
        );
        let _ = score;
        Say {
            text: text.trim().to_owned(),
            kind: SayKind::Question,
            question: true,
            index: Some(next),
        }
    }

    fn summary(&mut self, lead_in: Option<String>) -> Say {
        self.done = true;
        // The summary is spoken from what the scorer made of every answer so far.
        let score =
            crate::lead::LeadScorer::score(&crate::lead::RuleScorer, &self.answers, self.day);
        let heard = spoken_summary(&score);
        let text = [
            lead_in.unwrap_or_default(),
            heard,
            self.script.closing.clone(),
        ]
        .iter()
        .map(|s| s.trim())
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join(" ");
        Say {
            text,
            kind: SayKind::Summary,
            question: false,
            index: None,
        }
    }
}

fn amount_words(v: f64) -> String {
    if v >= 1_000_000.0 {
        let m = v / 1_000_000.0;
        if (m - m.round()).abs() < 0.05 {
            format!("{} million", m.round() as i64)
        } else {
            format!("{m:.1} million")
        }
    } else if v >= 1_000.0 {
        format!("{}k", (v / 1_000.0).round() as i64)
    } else {
        format!("{}", v.round() as i64)
    }
}

fn currency_words(c: crate::lead::Currency) -> &'static str {
    match c {
        "EUR" => " euros",
        "GBP" => " pounds",
        _ => " dollars",
    }
}

/// A short spoken summary of what was heard, e.g. "So: about 80k dollars, you make the
/// decision, and you want to be live by 2027-02-28." Empty when nothing was heard.
pub fn spoken_summary(score: &LeadScore) -> String {
    let mut parts = Vec::new();
    match &score.budget {
        Some(Budget::Amount { value, currency }) => parts.push(format!(
            "about {}{}",
            amount_words(*value),
            currency_words(currency)
        )),
        Some(Budget::Range {
            low,
            high,
            currency,
        }) => parts.push(format!(
            "between {} and {}{}",
            amount_words(*low),
            amount_words(*high),
            currency_words(currency)
        )),
        Some(Budget::NoBudget) => parts.push("no budget set yet".to_owned()),
        None => {}
    }
    match score.authority {
        Some(Authority::DecisionMaker) => parts.push("you make the decision".to_owned()),
        Some(Authority::Influencer) => parts.push("you decide together with others".to_owned()),
        Some(Authority::NoAuthority) => parts.push("someone else makes the decision".to_owned()),
        None => {}
    }
    if score.need == Some(true) {
        parts.push("you have a clear need".to_owned());
    }
    match &score.timeline {
        Some(Timeline::By(d)) => parts.push(format!("you want to be live by {}", spoken_date(*d))),
        Some(Timeline::NoTimeline) => parts.push("no fixed timeline".to_owned()),
        None => {}
    }
    if parts.is_empty() {
        return String::new();
    }
    let last = parts.pop().expect("not empty");
    if parts.is_empty() {
        format!("So: {last}.")
    } else {
        format!("So: {}, and {last}.", parts.join(", "))
    }
}

fn spoken_date(d: Date) -> String {
    const MONTHS: [&str; 12] = [
        "January",
        "February",
        "March",
        "April",
        "May",
        "June",
        "July",
        "August",
        "September",
        "October",
        "November",
        "December",
    ];
    format!("{} {}, {}", MONTHS[(d.month - 1) as usize], d.day, d.year)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lead::{LeadScorer, RuleScorer};

    fn script() -> Script {
        Script {
            greeting: "Hi {name}, I'm Ava.".into(),
            questions: vec![
                Question {
                    text: "What budget do you have for this?".into(),
                    category: Category::Budget,
                    follow_up: Some("Roughly what amount would that be?".into()),
                },
                Question {
                    text: "Who makes the final decision?".into(),
                    category: Category::Authority,
                    follow_up: None,
                },
                Question {
                    text: "When do you need it live?".into(),
                    category: Category::Timeline,
                    follow_up: Some("Is there a date you are aiming for?".into()),
                },
            ],
            closing: "Thanks for your time, talk soon.".into(),
        }
    }

    fn day() -> Date {
        Date::new(2026, 12, 1).unwrap()
    }

    fn score(c: &Conversation) -> LeadScore {
        RuleScorer.score(c.answers(), day())
    }

    #[test]
    fn asks_in_order_follows_up_once_and_summarizes() {
        let mut c = Conversation::new(script(), Some("Dana".into()), day());
        let open = c.opening();
        assert_eq!(
            open.text,
            "Hi Dana, I'm Ava. What budget do you have for this?"
        );
        assert_eq!((open.kind, open.index), (SayKind::Greeting, Some(0)));

        c.hear("We do have some money set aside.", 1_000);
        let s = c.next(&score(&c)).unwrap();
        assert_eq!((s.kind, s.index), (SayKind::FollowUp, Some(0)));

        c.hear("About eighty thousand dollars for the first year.", 5_000);
        let s = c.next(&score(&c)).unwrap();
        assert_eq!((s.kind, s.index), (SayKind::Question, Some(1)));
        assert!(
            s.text.ends_with("Who makes the final decision?"),
            "{}",
            s.text
        );

        c.hear("I make the final call.", 9_000);
        let s = c.next(&score(&c)).unwrap();
        assert_eq!(s.index, Some(2));

        c.hear("By the end of February.", 12_000);
        let s = c.next(&score(&c)).unwrap();
        assert_eq!(s.kind, SayKind::Summary);
        assert!(!s.question);
        assert_eq!(
            s.text,
            "Okay, thank you. So: about 80k dollars, you make the decision, and you want to be \
             live by February 28, 2027. Thanks for your time, talk soon."
        );
        assert!(c.finished());
        assert_eq!(c.next(&score(&c)), None);
        let cats: Vec<_> = c.answers().iter().map(|a| a.category).collect();
        assert_eq!(
            cats,
            vec![
                Some(Category::Budget),
                Some(Category::Budget),
                Some(Category::Authority),
                Some(Category::Timeline)
            ]
        );
    }

    #[test]
    fn an_answer_acknowledged_aloud_is_not_acknowledged_again() {
        let mut c = Conversation::new(script(), None, day());
        c.opening();
        c.hear("Twenty to thirty thousand euros.", 1_000);
        c.acknowledged();
        assert_eq!(
            c.next(&score(&c)).unwrap().text,
            "Who makes the final decision?"
        );
        c.hear("I do.", 2_000);
        assert!(c.next(&score(&c)).unwrap().text.starts_with("Thanks."));
    }

    #[test]
    fn an_answer_that_has_what_is_needed_gets_no_follow_up() {
        let mut c = Conversation::new(script(), None, day());
        assert_eq!(
            c.opening().text,
            "Hi, I'm Ava. What budget do you have for this?"
        );
        c.hear("Twenty to thirty thousand euros.", 1_000);
        assert_eq!(c.next(&score(&c)).unwrap().kind, SayKind::Question);
    }

    #[test]
    fn silence_reprompts_then_moves_on() {
        let mut c = Conversation::new(script(), None, day());
        c.opening();
        let r = c.reprompt().unwrap();
        assert_eq!(r.kind, SayKind::Reprompt);
        assert!(r.text.ends_with("What budget do you have for this?"));
        let m = c.move_on(&score(&c)).unwrap();
        assert_eq!(m.index, Some(1));
        assert!(m.text.starts_with("Let's move on."));
    }

    #[test]
    fn summary_of_nothing_is_just_the_closing() {
        let mut c = Conversation::new(
            Script {
                greeting: "Hello.".into(),
                questions: vec![],
                closing: "Bye.".into(),
            },
            None,
            day(),
        );
        let s = c.opening();
        assert_eq!((s.kind, s.text.as_str()), (SayKind::Summary, "Hello. Bye."));
    }
}
