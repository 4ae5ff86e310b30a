//! When the agent may speak, and when it must stop: a pure, clock-injected state machine.
//! Events in (people starting and stopping to speak, their transcripts, the agent's own
//! playout), decisions out. Times are ms on one clock, supplied by the caller.
//!
//! - **End of a person's turn**: they stopped speaking, and stayed silent for `end_ms`
//!   (`end_unfinished_ms` when their last words end on "and", "so", "um", a comma, ...), and at
//!   most `max_wait_ms` after they stopped whatever the words say.
//! - **Never over a person**: the agent is only told to speak while nobody speaks; if a person
//!   starts at the same moment the agent does, the agent yields.
//! - **End-of-turn model**: when an audio model (Smart Turn) judged the pause, a "complete"
//!   verdict ends the turn after `end_complete_ms`, an "incomplete" one waits
//!   `end_incomplete_ms` unless the words transcribed after the pause end a sentence (then
//!   `end_ms`: words and audio disagree, and the words are the better witness of a finished
//!   thought); without a verdict, `end_ms` applies. Unfinished words always wait.
//! - **Barge-in**: a person speaking over the agent for `barge_in_ms` makes it pause at once
//!   (it holds its place: words take a second to transcribe). Real words (not a backchannel
//!   like "mm-hmm", not an echo of the agent's own words) make the pause a stop; a
//!   backchannel, an echo, or no words within `false_interruption_ms` resume it.
//! - **Echo**: a speaker whose words matched the agent's own while it played is an echo
//!   source from then on: their voice alone no longer pauses the agent (their real words
//!   still stop it), and their voice in the agent's playout tail does not start a turn.
//! - **Silence**: no answer within `silence_timeout_ms` of the agent's question: re-prompt once,
//!   then move on.

/// Timings and word lists.
#[derive(Debug, Clone, PartialEq)]
pub struct TurnConfig {
    /// Silence after a finished sentence that ends the turn.
    pub end_ms: u64,
    /// Silence after unfinished words ("and", "so", "um", a trailing comma).
    pub end_unfinished_ms: u64,
    /// The longest the agent waits after a person stopped, whatever they said.
    pub max_wait_ms: u64,
    /// Overlap (from the speech-start edge, itself ~200 ms into the voice) after which the
    /// agent pauses; with real words it stops.
    pub barge_in_ms: u64,
    /// Silence after an end-of-turn model said "complete".
    pub end_complete_ms: u64,
    /// Silence after an end-of-turn model said "incomplete".
    pub end_incomplete_ms: u64,
    /// Model probability at or above which a pause counts as the end of the turn.
    pub complete_threshold: f32,
    /// Words that acknowledge without taking the turn.
    pub backchannels: Vec<String>,
    /// Fewer words than this, said over the agent, acknowledge rather than interrupt, whatever
    /// they are: a one-word "mm-hmm" is what a small speech model mis-hears most ("and anthem"),
    /// so its words cannot be the only witness.
    pub min_interruption_words: usize,
    /// Words that interrupt however few they are ("wait", "stop", "sorry", "no").
    pub interrupt_words: Vec<String>,
    /// Time after an interruption within which words must come, or the agent resumes.
    pub false_interruption_ms: u64,
    /// Silence after the agent's question before it re-prompts (once), then moves on.
    pub silence_timeout_ms: u64,
    /// After the agent stops playing, speech this soon may still be its echo.
    pub echo_tail_ms: u64,
}

impl Default for TurnConfig {
    fn default() -> Self {
        Self {
            end_ms: 500,
            end_unfinished_ms: 1_500,
            max_wait_ms: 3_000,
            barge_in_ms: 300,
            end_complete_ms: 0,
            end_incomplete_ms: 1_500,
            complete_threshold: 0.5,
            backchannels: [
                "mm-hmm", "mhm", "mm", "hmm", "uh-huh", "yeah", "yes", "yep", "right", "okay",
                "ok", "sure", "got it", "i see", "uh huh", "mm hmm",
            ]
            .iter()
            .map(|s| (*s).to_owned())
            .collect(),
            min_interruption_words: 3,
            interrupt_words: [
                "stop", "wait", "hold", "hang", "sorry", "excuse", "pardon", "no", "nope", "what",
                "actually", "question", "hello", "hey",
            ]
            .iter()
            .map(|s| (*s).to_owned())
            .collect(),
            false_interruption_ms: 1_500,
            silence_timeout_ms: 8_000,
            echo_tail_ms: 600,
        }
    }
}

/// What happened.
#[derive(Debug, Clone, PartialEq)]
pub enum TurnEvent {
    /// A person's voice started (VAD).
    PersonStarted {
        /// Who.
        who: String,
    },
    /// A person's voice stopped.
    PersonStopped {
        /// Who.
        who: String,
    },
    /// An end-of-turn model's verdict on the pause that just began.
    EndOfTurn {
        /// Who paused.
        who: String,
        /// Probability that the turn is complete.
        probability: f32,
    },
    /// Words from a person, interim or final.
    Transcript {
        /// Who.
        who: String,
        /// The words.
        text: String,
    },
    /// The agent started playing `text`.
    AgentStarted {
        /// What it is saying.
        text: String,
        /// A question it then waits an answer for.
        question: bool,
    },
    /// The agent's audio ended (finished or stopped).
    AgentFinished,
    /// Time passes (call at least every 100 ms while anything is pending).
    Tick,
}

/// What the agent should do now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TurnDecision {
    /// The person's turn is over: the agent may speak.
    Speak,
    /// Stop playing at once (barge-in, or a person started as the agent did).
    Stop,
    /// Stop sending audio but hold the place: it may have been only a backchannel or noise.
    Pause,
    /// The interruption was not one: resume from where playing paused or stopped.
    Resume,
    /// Nobody answered: ask again, shorter.
    Reprompt,
    /// Still nobody: go on to the next question.
    MoveOn,
}

#[derive(Debug, Clone, PartialEq)]
enum State {
    /// Nobody owes anybody anything.
    Idle,
    /// The agent asked; waiting for an answer since `since`, `reprompted` once already?
    AwaitingAnswer { since: u64, reprompted: bool },
    /// A person is talking (or paused mid-turn); their turn is not over.
    PersonTurn {
        stopped_at: Option<u64>,
        unfinished: bool,
        /// The end-of-turn model's verdict on this pause: complete?
        complete: Option<bool>,
        /// Words transcribed after the pause began end a sentence.
        sentence_ended: bool,
    },
    /// The agent is playing.
    AgentSpeaking {
        started: u64,
        question: bool,
        overlap_since: Option<u64>,
        words_heard: bool,
        echo_seen: bool,
    },
    /// The agent paused at `at` for voice over it; words are expected by
    /// `at + false_interruption_ms`. `settled`: what was heard was a backchannel or an echo.
    Paused {
        at: u64,
        started: u64,
        question: bool,
        settled: bool,
    },
    /// The agent was cut off at `at`; words are expected by `at + false_interruption_ms`.
    Interrupted {
        at: u64,
        words_heard: bool,
        question: bool,
    },
}

/// The engine. Feed it with [`Turns::on`]; it returns at most one decision per event.
#[derive(Debug, Clone)]
pub struct Turns {
    config: TurnConfig,
    state: State,
    speaking: Vec<String>,
    agent_stopped_at: Option<u64>,
    /// Speakers whose microphones were heard repeating the agent.
    echoing: Vec<String>,
    /// The agent's last few lines, for telling its echo from a person's words.
    lines: std::collections::VecDeque<Line>,
}

/// One line the agent played: when, and its words.
#[derive(Debug, Clone)]
struct Line {
    started: u64,
    stopped: Option<u64>,
    words: Vec<String>,
}

/// Lines remembered for echo checks: a final transcript can come after the next line began.
const LINES_KEPT: usize = 4;

fn words(text: &str) -> Vec<String> {
    text.to_lowercase()
        .split(|c: char| !(c.is_alphanumeric() || c == '\'' || c == '-'))
        .filter(|w| !w.is_empty())
        .map(str::to_owned)
        .collect()
}

const UNFINISHED: [&str; 14] = [
    "and", "so", "but", "or", "because", "um", "uh", "er", "like", "then", "if", "the", "a", "to",
];

fn unfinished(text: &str) -> bool {
    let t = text.trim_end();
    if t.ends_with(',') || t.ends_with("...") || t.ends_with('…') || t.ends_with('-') {
        return true;
    }
    words(t)
        .last()
        .is_some_and(|w| UNFINISHED.contains(&w.as_str()))
}

/// Share of a transcript's words that, found in the agent's line, make it the agent's echo.
const ECHO_SHARE: f32 = 0.7;
/// Share at which words heard during a pause are too like the agent's to count as words.
const AMBIGUOUS_SHARE: f32 = 0.5;

/// The share of `text`'s words that are among `said` (see [`found`]).
fn share(said: &[String], text: &str) -> f32 {
    let heard = words(text);
    if heard.is_empty() {
        return 0.0;
    }
    heard.iter().filter(|w| found(said, w)).count() as f32 / heard.len() as f32
}

/// Whether `heard` is one of `said`'s words, or a mis-hearing of one or of up to three in a
/// row run together (Whisper heard the agent's "Hi Dana" coming back as "Haidena"): a word of
/// five letters or more within 30% of its letters by edit distance. Shorter words must match.
fn found(said: &[String], heard: &str) -> bool {
    if said.iter().any(|w| w == heard) {
        return true;
    }
    let n = heard.chars().count();
    if n < 5 {
        return false;
    }
    let limit = n * 3 / 10;
    (0..said.len()).any(|i| {
        (1..=3).filter(|k| i + k <= said.len()).any(|k| {
            let joined = said[i..i + k].concat();
            joined.chars().count().abs_diff(n) <= limit && edit_distance(heard, &joined) <= limit
        })
    })
}

/// Levenshtein distance between two short words, by characters.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substitute = diagonal + usize::from(ca != *cb);
            diagonal = row[j + 1];
            row[j + 1] = substitute.min(row[j] + 1).min(row[j + 1] + 1);
        }
    }
    row[b.len()]
}

/// Words that end with a full stop, question or exclamation mark and no unfinished word.
fn ends_sentence(text: &str) -> bool {
    let t = text.trim_end();
    (t.ends_with('.') || t.ends_with('?') || t.ends_with('!'))
        && !t.ends_with("...")
        && !unfinished(t)
}

impl Turns {
    /// An engine with `config`.
    pub fn new(config: TurnConfig) -> Self {
        Self {
            config,
            state: State::Idle,
            speaking: Vec::new(),
            agent_stopped_at: None,
            echoing: Vec::new(),
            lines: std::collections::VecDeque::new(),
        }
    }

    /// Whether anyone but the agent is speaking now.
    pub fn someone_speaking(&self) -> bool {
        !self.speaking.is_empty()
    }

    /// Whether `text` is only acknowledgement ("mm-hmm", "yeah", ...), not taking the turn.
    pub fn is_backchannel(&self, text: &str) -> bool {
        let w = words(text);
        if w.is_empty() {
            return true;
        }
        let joined = w.join(" ");
        self.config.backchannels.contains(&joined)
            || w.iter()
                .all(|x| self.config.backchannels.iter().any(|b| b == x))
    }

    /// Whether `text` acknowledges rather than takes the turn: a backchannel, or, when
    /// `over_agent` (said while the agent played), fewer than `min_interruption_words` words
    /// none of which is an interrupt word.
    pub fn acknowledges(&self, text: &str, over_agent: bool) -> bool {
        if self.is_backchannel(text) {
            return true;
        }
        let w = words(text);
        over_agent
            && w.len() < self.config.min_interruption_words
            && !w.iter().any(|x| self.config.interrupt_words.contains(x))
    }

    /// Whether the agent is playing a line now (or paused in the middle of one).
    pub fn agent_playing(&self) -> bool {
        matches!(
            self.state,
            State::AgentSpeaking { .. } | State::Paused { .. }
        )
    }

    /// Whether a person's audio of `start_ms..end_ms` was said over the agent: the agent is
    /// playing (or paused mid-line) now, or that audio lies wholly inside a line it played.
    pub fn said_over_agent(&self, start_ms: u64, end_ms: u64) -> bool {
        self.agent_playing()
            || self.lines.iter().any(|l| {
                l.stopped
                    .is_some_and(|s| start_ms >= l.started && end_ms <= s)
            })
    }

    /// Whether the agent is playing (or paused mid-line), or stopped within the echo tail.
    fn in_playout(&self, now: u64) -> bool {
        matches!(
            self.state,
            State::AgentSpeaking { .. } | State::Paused { .. }
        ) || self
            .agent_stopped_at
            .is_some_and(|t| now.saturating_sub(t) <= self.config.echo_tail_ms)
    }

    /// Whether `text` is mostly the agent's own recent words (its voice in someone's microphone).
    fn is_echo(&self, text: &str, now: u64) -> bool {
        self.in_playout(now)
            && self
                .lines
                .iter()
                .any(|l| share(&l.words, text) >= ECHO_SHARE)
    }

    /// Whether `who`'s `text`, transcribed from their audio of `start_ms..end_ms`, is the
    /// agent's own voice picked up by their microphone: that audio overlaps the agent's latest
    /// line (or its echo tail) and the words are mostly the line's. Final transcripts come
    /// long after the audio, so callers check them with this before treating them as words;
    /// an echo also makes `who` a known echo source and settles a pause it caused.
    pub fn echo_of_agent(&mut self, who: &str, text: &str, start_ms: u64, end_ms: u64) -> bool {
        let tail = self.config.echo_tail_ms;
        let echo = self.lines.iter().any(|l| {
            let window_end = l.stopped.map_or(u64::MAX, |t| t + tail);
            end_ms >= l.started && start_ms <= window_end && share(&l.words, text) >= ECHO_SHARE
        });
        if !echo {
            return false;
        }
        if !self.echoing.iter().any(|w| w == who) {
            self.echoing.push(who.to_owned());
        }
        if let State::Paused { settled, .. } = &mut self.state {
            *settled = true;
        }
        true
    }

    /// The largest share of `text`'s words found in one of the agent's recent lines.
    fn agent_share(&self, text: &str) -> f32 {
        self.lines
            .iter()
            .map(|l| share(&l.words, text))
            .fold(0.0, f32::max)
    }

    /// Takes one event at `now` and says what to do, if anything.
    pub fn on(&mut self, event: TurnEvent, now: u64) -> Option<TurnDecision> {
        let c = self.config.clone();
        match event {
            TurnEvent::PersonStarted { who } => {
                let echo_source = self.echoing.contains(&who);
                if !self.speaking.contains(&who) {
                    self.speaking.push(who);
                }
                if echo_source && self.in_playout(now) {
                    // Most likely the agent's own voice coming back: only its words count.
                    match &mut self.state {
                        State::AgentSpeaking {
                            overlap_since,
                            words_heard,
                            echo_seen,
                            ..
                        } => {
                            if overlap_since.is_none() {
                                *words_heard = false;
                            }
                            overlap_since.get_or_insert(now);
                            *echo_seen = true;
                        }
                        State::Paused { settled, .. } => *settled = false,
                        _ => {}
                    }
                    return None;
                }
                match &mut self.state {
                    State::AgentSpeaking {
                        started,
                        overlap_since,
                        words_heard,
                        ..
                    } => {
                        if overlap_since.is_none() {
                            // A new stretch of overlap needs words of its own: the late
                            // transcript of an earlier "mm-hmm" does not count for it.
                            *words_heard = false;
                        }
                        if now.saturating_sub(*started) < 100 {
                            // Both started together: the agent yields.
                            let question =
                                matches!(self.state, State::AgentSpeaking { question: true, .. });
                            self.state = State::Interrupted {
                                at: now,
                                words_heard: true,
                                question,
                            };
                            return Some(TurnDecision::Stop);
                        }
                        overlap_since.get_or_insert(now);
                        None
                    }
                    State::Interrupted { .. } => None,
                    State::Paused { settled, .. } => {
                        // New voice: whatever settled the pause is not the last word.
                        *settled = false;
                        None
                    }
                    _ => {
                        self.state = State::PersonTurn {
                            stopped_at: None,
                            unfinished: false,
                            complete: None,
                            sentence_ended: false,
                        };
                        None
                    }
                }
            }
            TurnEvent::PersonStopped { who } => {
                self.speaking.retain(|w| *w != who);
                if !self.speaking.is_empty() {
                    return None;
                }
                match &mut self.state {
                    State::PersonTurn {
                        stopped_at,
                        complete,
                        sentence_ended,
                        ..
                    } => {
                        *stopped_at = Some(now);
                        *complete = None;
                        *sentence_ended = false;
                    }
                    State::AgentSpeaking { overlap_since, .. } => *overlap_since = None,
                    _ => {}
                }
                None
            }
            TurnEvent::EndOfTurn { who, probability } => {
                if let State::PersonTurn {
                    stopped_at: Some(_),
                    complete,
                    ..
                } = &mut self.state
                    && !self.speaking.contains(&who)
                {
                    *complete = Some(probability >= c.complete_threshold);
                }
                None
            }
            TurnEvent::Transcript { who, text } => {
                if self.is_echo(&text, now) {
                    if !self.echoing.contains(&who) {
                        self.echoing.push(who);
                    }
                    match &mut self.state {
                        State::AgentSpeaking { echo_seen, .. } => *echo_seen = true,
                        State::Paused { settled, .. } => *settled = true,
                        _ => {}
                    }
                    return None;
                }
                let backchannel = self.is_backchannel(&text);
                // Over the agent, a word or two acknowledges unless it asks to stop.
                let acknowledged = self.acknowledges(&text, true);
                let ambiguous = self.agent_share(&text) >= AMBIGUOUS_SHARE;
                match &mut self.state {
                    State::Paused {
                        at,
                        question,
                        settled,
                        ..
                    } => {
                        if acknowledged {
                            *settled = true;
                            return None;
                        }
                        if ambiguous {
                            // Half the agent's own words ("yeah, I'm" for "Hi Dana, I'm"):
                            // maybe a mis-heard echo; wait for more words or the quiet.
                            return None;
                        }
                        // Real words: the pause becomes a stop.
                        self.state = State::Interrupted {
                            at: *at,
                            words_heard: true,
                            question: *question,
                        };
                        return Some(TurnDecision::Stop);
                    }
                    State::AgentSpeaking { words_heard, .. } => {
                        // Words half the agent's own may be its echo mis-heard ("Yeah, I'm
                        // Ava" for "Hi Dana, I'm Ava"): not enough to stop it.
                        if !acknowledged && !ambiguous {
                            *words_heard = true;
                        }
                        self.check_barge_in(now)
                    }
                    State::Interrupted { words_heard, .. } => {
                        if !backchannel {
                            *words_heard = true;
                        }
                        None
                    }
                    State::PersonTurn {
                        unfinished: u,
                        stopped_at,
                        sentence_ended,
                        ..
                    } => {
                        *u = unfinished(&text);
                        *sentence_ended = stopped_at.is_some() && ends_sentence(&text);
                        None
                    }
                    State::AwaitingAnswer { .. } | State::Idle if !backchannel => {
                        let stopped_at = (!self.someone_speaking()).then_some(now);
                        self.state = State::PersonTurn {
                            stopped_at,
                            unfinished: unfinished(&text),
                            complete: None,
                            sentence_ended: stopped_at.is_some() && ends_sentence(&text),
                        };
                        None
                    }
                    _ => None,
                }
            }
            TurnEvent::AgentStarted { text, question } => {
                self.agent_stopped_at = None;
                if self.lines.len() == LINES_KEPT {
                    self.lines.pop_front();
                }
                self.lines.push_back(Line {
                    started: now,
                    stopped: None,
                    words: words(&text),
                });
                self.state = State::AgentSpeaking {
                    started: now,
                    question,
                    overlap_since: None,
                    words_heard: false,
                    echo_seen: false,
                };
                if self.someone_speaking() {
                    // Never over a person.
                    self.state = State::Interrupted {
                        at: now,
                        words_heard: true,
                        question,
                    };
                    return Some(TurnDecision::Stop);
                }
                None
            }
            TurnEvent::AgentFinished => {
                self.agent_stopped_at = Some(now);
                if let Some(line) = self.lines.back_mut() {
                    line.stopped.get_or_insert(now);
                }
                if let State::AgentSpeaking { question, .. } | State::Paused { question, .. } =
                    self.state
                {
                    self.state = if question {
                        State::AwaitingAnswer {
                            since: now,
                            reprompted: false,
                        }
                    } else {
                        State::Idle
                    };
                }
                None
            }
            TurnEvent::Tick => match self.state.clone() {
                State::AgentSpeaking { .. } => self.check_barge_in(now),
                State::Paused {
                    at,
                    started,
                    question,
                    settled,
                } => {
                    let quiet = !self.someone_speaking();
                    if quiet && (settled || now >= at + c.false_interruption_ms) {
                        self.state = State::AgentSpeaking {
                            started,
                            question,
                            overlap_since: None,
                            words_heard: false,
                            // Echo sources are known by name from here on.
                            echo_seen: false,
                        };
                        Some(TurnDecision::Resume)
                    } else {
                        None
                    }
                }
                State::Interrupted {
                    at,
                    words_heard,
                    question,
                } => {
                    if words_heard {
                        // A real interruption: it is the person's turn now.
                        self.state = State::PersonTurn {
                            stopped_at: (!self.someone_speaking()).then_some(now),
                            unfinished: false,
                            complete: None,
                            sentence_ended: false,
                        };
                        None
                    } else if now >= at + c.false_interruption_ms && !self.someone_speaking() {
                        self.state = State::AgentSpeaking {
                            started: now,
                            question,
                            overlap_since: None,
                            words_heard: false,
                            echo_seen: false,
                        };
                        Some(TurnDecision::Resume)
                    } else {
                        None
                    }
                }
                State::PersonTurn {
                    stopped_at: Some(stopped),
                    unfinished,
                    complete,
                    sentence_ended,
                } => {
                    if self.someone_speaking() {
                        return None;
                    }
                    let wait = match (unfinished, complete) {
                        (true, _) => c.end_unfinished_ms,
                        (false, Some(true)) => c.end_complete_ms,
                        (false, Some(false)) if sentence_ended => c.end_ms,
                        (false, Some(false)) => c.end_incomplete_ms,
                        (false, None) => c.end_ms,
                    }
                    .min(c.max_wait_ms);
                    if now >= stopped + wait {
                        self.state = State::Idle;
                        Some(TurnDecision::Speak)
                    } else {
                        None
                    }
                }
                State::AwaitingAnswer { since, reprompted } => {
                    if self.someone_speaking() || now < since + c.silence_timeout_ms {
                        None
                    } else if reprompted {
                        self.state = State::Idle;
                        Some(TurnDecision::MoveOn)
                    } else {
                        self.state = State::AwaitingAnswer {
                            since: now,
                            reprompted: true,
                        };
                        Some(TurnDecision::Reprompt)
                    }
                }
                _ => None,
            },
        }
    }

    fn check_barge_in(&mut self, now: u64) -> Option<TurnDecision> {
        let State::AgentSpeaking {
            started,
            overlap_since: Some(since),
            words_heard,
            question,
            echo_seen,
        } = self.state
        else {
            return None;
        };
        if now < since + self.config.barge_in_ms {
            return None;
        }
        if words_heard {
            self.state = State::Interrupted {
                at: now,
                words_heard,
                question,
            };
            return Some(TurnDecision::Stop);
        }
        if echo_seen {
            // What came back so far was the agent's own voice: wait for words.
            return None;
        }
        self.state = State::Paused {
            at: now,
            started,
            question,
            settled: false,
        };
        Some(TurnDecision::Pause)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `events` (at their times) with a Tick every 100 ms up to `until`, and returns
    /// every decision with its time.
    fn run(events: &[(u64, TurnEvent)], until: u64) -> Vec<(u64, TurnDecision)> {
        let mut t = Turns::new(TurnConfig::default());
        let mut out = Vec::new();
        let mut pending: Vec<(u64, TurnEvent)> = events.to_vec();
        pending.sort_by_key(|(at, _)| *at);
        let mut next = 0;
        for now in (0..=until).step_by(10) {
            while next < pending.len() && pending[next].0 == now {
                if let Some(d) = t.on(pending[next].1.clone(), now) {
                    out.push((now, d));
                }
                next += 1;
            }
            if now % 100 == 0
                && let Some(d) = t.on(TurnEvent::Tick, now)
            {
                out.push((now, d));
            }
        }
        out
    }

    fn started(who: &str) -> TurnEvent {
        TurnEvent::PersonStarted { who: who.into() }
    }
    fn stopped(who: &str) -> TurnEvent {
        TurnEvent::PersonStopped { who: who.into() }
    }
    fn said(who: &str, text: &str) -> TurnEvent {
        TurnEvent::Transcript {
            who: who.into(),
            text: text.into(),
        }
    }
    fn agent(text: &str) -> TurnEvent {
        TurnEvent::AgentStarted {
            text: text.into(),
            question: true,
        }
    }

    #[test]
    fn words_from_an_earlier_backchannel_do_not_arm_the_next_overlap() {
        // A short "mm-hmm" heard as words (its transcript arrives after it ended), then a
        // short "right": neither overlap lasts long enough to pause the agent, and the late
        // words of the first do not count for the second.
        let got = run(
            &[
                (0, agent("a long question that goes on and on")),
                (1000, started("lead")),
                (1250, stopped("lead")),
                (2200, said("lead", "and anthem")),
                (3000, started("lead")),
                (3250, stopped("lead")),
            ],
            6000,
        );
        assert_eq!(got, vec![]);
    }

    #[test]
    fn a_mis_heard_mm_hmm_over_the_agent_pauses_it_at_most() {
        // Long enough to pause the agent, and transcribed as words that are no backchannel:
        // two words over the agent acknowledge all the same.
        let got = run(
            &[
                (0, agent("a long question that goes on and on")),
                (1000, started("lead")),
                (1600, stopped("lead")),
                (2200, said("lead", "and anthem.")),
            ],
            4000,
        );
        assert_eq!(
            got,
            vec![(1300, TurnDecision::Pause), (2200, TurnDecision::Resume)]
        );
    }

    #[test]
    fn one_word_that_asks_to_stop_stops_the_agent() {
        for word in ["Wait.", "Stop!", "Sorry,", "No no"] {
            let got = run(
                &[
                    (0, agent("a long question that goes on and on")),
                    (1000, started("lead")),
                    (1500, stopped("lead")),
                    (1900, said("lead", word)),
                ],
                4000,
            );
            // Then it is the person's turn (a `Speak` follows once they are done).
            assert_eq!(
                got[..2],
                [(1300, TurnDecision::Pause), (1900, TurnDecision::Stop)],
                "{word}: {got:?}"
            );
        }
    }

    #[test]
    fn a_short_answer_after_the_agent_finished_is_an_answer() {
        let mut t = Turns::new(TurnConfig::default());
        t.on(agent("When do you need it?"), 0);
        assert!(t.said_over_agent(500, 1_200), "said while it plays");
        t.on(TurnEvent::AgentFinished, 1_500);
        // Wholly inside the line: over it. Begun after it ended: an answer.
        assert!(t.said_over_agent(500, 1_400));
        assert!(!t.said_over_agent(1_700, 2_600));
        assert!(!t.acknowledges("Next month.", t.said_over_agent(1_700, 2_600)));
        assert!(t.acknowledges("and anthem", t.said_over_agent(500, 1_400)));
        assert!(!t.acknowledges("hold on", true));
        assert!(t.acknowledges("Mm-hmm.", false), "a backchannel anywhere");
    }

    #[test]
    fn a_finished_sentence_ends_the_turn_after_500_ms() {
        let got = run(
            &[
                (0, started("lead")),
                (2000, stopped("lead")),
                (2150, said("lead", "We need it by March.")),
            ],
            4000,
        );
        assert_eq!(got, vec![(2500, TurnDecision::Speak)]);
    }

    #[test]
    fn unfinished_words_wait_longer_and_resuming_cancels() {
        let got = run(
            &[
                (0, started("lead")),
                (2000, stopped("lead")),
                (2100, said("lead", "so we need it by March and")),
            ],
            5000,
        );
        assert_eq!(got, vec![(3500, TurnDecision::Speak)]);
        let got = run(
            &[
                (0, started("lead")),
                (2000, stopped("lead")),
                (2300, started("lead")),
                (3000, stopped("lead")),
                (3100, said("lead", "by March.")),
            ],
            5000,
        );
        assert_eq!(
            got,
            vec![(3500, TurnDecision::Speak)],
            "the pause at 2000 was not the end"
        );
    }

    #[test]
    fn the_wait_is_capped() {
        let mut t = Turns::new(TurnConfig {
            end_unfinished_ms: 9_000,
            ..TurnConfig::default()
        });
        t.on(started("lead"), 0);
        t.on(said("lead", "and um"), 500);
        t.on(stopped("lead"), 1000);
        assert_eq!(t.on(TurnEvent::Tick, 3900), None);
        assert_eq!(t.on(TurnEvent::Tick, 4000), Some(TurnDecision::Speak));
    }

    #[test]
    fn the_agent_never_starts_over_a_person_and_yields_to_a_simultaneous_start() {
        let got = run(
            &[(0, started("lead")), (500, agent("What is your budget?"))],
            1000,
        );
        assert_eq!(got, vec![(500, TurnDecision::Stop)]);
        let got = run(
            &[
                (1000, agent("What is your budget?")),
                (1050, started("lead")),
            ],
            2000,
        );
        assert_eq!(got, vec![(1050, TurnDecision::Stop)]);
    }

    #[test]
    fn real_words_over_the_agent_stop_it_after_300_ms() {
        let got = run(
            &[
                (
                    0,
                    agent("Could you tell me about your current process for handling tickets?"),
                ),
                (1000, started("lead")),
                (1200, said("lead", "Sorry, can I ask something first")),
            ],
            1500,
        );
        assert_eq!(got, vec![(1300, TurnDecision::Stop)]);
        // Words that come late stop it when they come.
        let got = run(
            &[
                (0, agent("Could you tell me more?")),
                (1000, started("lead")),
                (1800, said("lead", "wait a second")),
            ],
            2000,
        );
        // Voice alone pauses it 300 ms in; the words make the pause a stop.
        assert_eq!(
            got,
            vec![(1300, TurnDecision::Pause), (1800, TurnDecision::Stop)]
        );
    }

    #[test]
    fn a_backchannel_pauses_the_agent_at_most_and_never_stops_it() {
        let line = agent("So the plan would be to start with your support team.");
        // Short ones go under the pause.
        let got = run(
            &[
                (0, line.clone()),
                (1000, started("lead")),
                (1250, stopped("lead")),
                (1500, said("lead", "Mm-hmm.")),
            ],
            3000,
        );
        assert_eq!(got, vec![]);
        // Longer ones pause it until their words show what they were.
        let got = run(
            &[
                (0, line),
                (1000, started("lead")),
                (1400, stopped("lead")),
                (1550, said("lead", "Mm-hmm.")),
                (3000, started("lead")),
                (3350, stopped("lead")),
                (3650, said("lead", "yeah, okay")),
            ],
            5000,
        );
        assert_eq!(
            got,
            vec![
                (1300, TurnDecision::Pause),
                (1600, TurnDecision::Resume),
                (3300, TurnDecision::Pause),
                (3700, TurnDecision::Resume)
            ],
            "backchannels never stop the agent"
        );
    }

    #[test]
    fn voice_without_words_stops_then_resumes() {
        let got = run(
            &[
                (0, agent("And how many people are on the team?")),
                (1000, started("lead")),
                (1800, stopped("lead")),
            ],
            4000,
        );
        // Paused 300 ms in; no words by 1.5 s later, and quiet: resumed.
        assert_eq!(
            got,
            vec![(1300, TurnDecision::Pause), (2800, TurnDecision::Resume)]
        );
        // Still noisy at that point: it waits for the quiet.
        let got = run(
            &[
                (0, agent("And how many people are on the team?")),
                (1000, started("lead")),
                (3200, stopped("lead")),
            ],
            4000,
        );
        assert_eq!(
            got,
            vec![(1300, TurnDecision::Pause), (3200, TurnDecision::Resume)]
        );
    }

    #[test]
    fn silence_reprompts_once_then_moves_on() {
        let got = run(
            &[
                (0, agent("What is your timeline?")),
                (2000, TurnEvent::AgentFinished),
            ],
            20_000,
        );
        assert_eq!(
            got,
            vec![
                (10_000, TurnDecision::Reprompt),
                (18_000, TurnDecision::MoveOn)
            ]
        );
    }

    #[test]
    fn the_agents_own_echo_does_not_interrupt_it() {
        // The first echo pauses the agent until its words show it is an echo; from then on
        // that microphone's voice is not a reason to pause, in this line or the next, and its
        // tail after the agent finished does not start a turn.
        let got = run(
            &[
                (0, agent("What budget have you set aside for this year?")),
                (500, started("lead")),
                (1100, stopped("lead")),
                (1210, said("lead", "what budget have you")),
                (1400, started("lead")),
                (2000, said("lead", "set aside for this")),
                (2600, stopped("lead")),
                (2700, TurnEvent::AgentFinished),
                (2750, started("lead")),
                (3000, stopped("lead")),
                (4000, agent("And who else decides?")),
                (4100, started("lead")),
                (5000, stopped("lead")),
                (5050, TurnEvent::AgentFinished),
            ],
            6000,
        );
        assert_eq!(
            got,
            vec![(800, TurnDecision::Pause), (1300, TurnDecision::Resume)],
            "echo must not stop the agent"
        );
        // Real words mixed in still do.
        let got = run(
            &[
                (0, agent("What budget have you set aside for this year?")),
                (500, started("lead")),
                (1200, said("lead", "budget have you set aside")),
                (1400, said("lead", "no sorry I need to go")),
            ],
            2000,
        );
        assert_eq!(
            got,
            vec![(800, TurnDecision::Pause), (1400, TurnDecision::Stop)]
        );
        // Also from a microphone known to echo.
        let got = run(
            &[
                (0, agent("What budget have you set aside for this year?")),
                (500, started("lead")),
                (1100, stopped("lead")),
                (1210, said("lead", "budget have you set aside for this")),
                (1400, started("lead")),
                (2000, said("lead", "hold on, I have a question")),
            ],
            2500,
        );
        assert_eq!(
            got,
            vec![
                (800, TurnDecision::Pause),
                (1300, TurnDecision::Resume),
                (2000, TurnDecision::Stop)
            ]
        );
    }

    #[test]
    fn a_late_final_of_the_agents_echo_is_recognised_by_its_audio_times() {
        let mut t = Turns::new(TurnConfig::default());
        let line = "What budget have you set aside for this year?";
        assert_eq!(t.on(agent(line), 1_000), None);
        assert_eq!(t.on(TurnEvent::AgentFinished, 4_000), None);
        // The final of audio heard during the line arrives 1.5 s after the line ended.
        assert!(t.echo_of_agent(
            "lead",
            "budget have you set aside for this year",
            1_200,
            4_300
        ));
        // The same words from audio well after the line are the lead's own.
        assert!(!t.echo_of_agent(
            "lead",
            "budget have you set aside for this year",
            6_000,
            7_000
        ));
        // Other words during the line are not an echo.
        assert!(!t.echo_of_agent("lead", "we have about fifty thousand", 2_000, 3_000));
        // Nothing is an echo before the agent ever spoke.
        let mut fresh = Turns::new(TurnConfig::default());
        assert!(!fresh.echo_of_agent("lead", "what budget", 0, 100));
        // The lead is now a known echo source: its voice in the next line does not pause it.
        assert_eq!(t.on(agent("And who decides?"), 8_000), None);
        assert_eq!(t.on(started("lead"), 8_200), None);
        assert_eq!(t.on(TurnEvent::Tick, 9_000), None);
    }

    #[test]
    fn a_mis_heard_echo_does_not_stop_the_playing_agent_either() {
        let mut t = Turns::new(TurnConfig::default());
        t.on(
            agent("Hi Dana, I'm Ava. What problem are you trying to solve?"),
            1_000,
        );
        t.on(started("lead"), 1_400);
        assert_eq!(t.on(said("lead", "Yeah, I'm Ava"), 1_500), None);
        assert_eq!(t.on(TurnEvent::Tick, 1_700), Some(TurnDecision::Pause));
        assert_eq!(
            t.on(said("lead", "Yeah, I'm Ava. What problem"), 1_900),
            None
        );
        // A real interruption's words are mostly its own.
        let mut t = Turns::new(TurnConfig::default());
        t.on(agent("What budget do you have for this?"), 1_000);
        t.on(started("lead"), 1_400);
        assert_eq!(
            t.on(said("lead", "Budget? We have about fifty thousand"), 1_500),
            None
        );
        assert_eq!(t.on(TurnEvent::Tick, 1_700), Some(TurnDecision::Stop));
    }

    #[test]
    fn a_mis_heard_echo_neither_stops_the_agent_nor_becomes_an_answer_after_its_next_line() {
        let mut t = Turns::new(TurnConfig::default());
        let line = "Hi Dana, I'm Ava. What problem are you trying to solve?";
        t.on(agent(line), 1_000);
        t.on(started("lead"), 1_400);
        assert_eq!(t.on(TurnEvent::Tick, 1_700), Some(TurnDecision::Pause));
        // "Hi Dana, I'm" heard as "Yeah, I'm": half the agent's words, not a stop.
        assert_eq!(t.on(said("lead", "Yeah, I'm"), 2_300), None);
        assert_eq!(t.on(stopped("lead"), 2_400), None);
        assert_eq!(t.on(TurnEvent::Tick, 3_300), Some(TurnDecision::Resume));
        t.on(TurnEvent::AgentFinished, 6_000);
        // The next line starts before the final of that echo arrives: still an echo.
        t.on(agent("Okay."), 6_100);
        assert!(t.echo_of_agent("lead", "Yeah, I'm Ava. What problem?", 1_400, 2_400));
    }

    #[test]
    fn an_echo_heard_with_its_words_run_together_is_still_an_echo() {
        let mut t = Turns::new(TurnConfig::default());
        t.on(
            agent("Hi Dana, I'm Ava. What problem are you trying to solve?"),
            1_000,
        );
        // Seen in CI: the greeting's first words came back transcribed as one.
        assert!(t.echo_of_agent("lead", "Haidena.", 1_050, 1_900));
        assert!(t.echo_of_agent("lead", "What problem are you tryingto solve?", 2_000, 4_000));
        // The lead's own words over the line are not, fused or not.
        assert!(!t.echo_of_agent("lead", "Hello there.", 1_050, 1_900));
        assert!(!t.echo_of_agent("lead", "Our invoicing is a mess.", 2_000, 4_000));
        assert_eq!(edit_distance("haidena", "hidana"), 2);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
    }

    fn verdict(who: &str, probability: f32) -> TurnEvent {
        TurnEvent::EndOfTurn {
            who: who.into(),
            probability,
        }
    }

    #[test]
    fn the_end_of_turn_model_shortens_or_lengthens_the_wait() {
        let turn = |extra: Vec<(u64, TurnEvent)>| {
            let mut events = vec![(0, started("lead")), (2000, stopped("lead"))];
            events.extend(extra);
            run(&events, 6000)
        };
        // No verdict: 500 ms.
        assert_eq!(turn(vec![]), vec![(2500, TurnDecision::Speak)]);
        // Complete: at the next tick after the verdict.
        assert_eq!(
            turn(vec![(2120, verdict("lead", 0.93))]),
            vec![(2200, TurnDecision::Speak)]
        );
        // Incomplete: 1.5 s, unless the person goes on.
        assert_eq!(
            turn(vec![(2120, verdict("lead", 0.12))]),
            vec![(3500, TurnDecision::Speak)]
        );
        // ... or words transcribed after the pause end a sentence: they win, when they come.
        assert_eq!(
            turn(vec![
                (2120, verdict("lead", 0.12)),
                (2850, said("lead", "We need it by March."))
            ]),
            vec![(2900, TurnDecision::Speak)]
        );
        // Words from before the pause do not count for it.
        assert_eq!(
            turn(vec![
                (1500, said("lead", "We need it by March.")),
                (2120, verdict("lead", 0.12))
            ]),
            vec![(3500, TurnDecision::Speak)]
        );
        // Unfinished words wait whatever the model says.
        assert_eq!(
            turn(vec![
                (2100, said("lead", "we need it by March, and")),
                (2120, verdict("lead", 0.93))
            ]),
            vec![(3500, TurnDecision::Speak)]
        );
        // A verdict on a pause the person already ended by speaking again is ignored, and a
        // new pause starts without one.
        assert_eq!(
            turn(vec![
                (2100, started("lead")),
                (2150, verdict("lead", 0.95)),
                (3000, stopped("lead")),
            ]),
            vec![(3500, TurnDecision::Speak)]
        );
    }
}
