//! Money in an answer: "eighty thousand", "80k", "$15,000", "twenty to thirty thousand
//! euros", "between 20k and 30k", and "we have no budget" as an explicit null.

use super::text::{Tok, find_phrase, tokens, words};

/// ISO 4217 code of a currency we recognise.
pub type Currency = &'static str;

/// What an answer says about money.
#[derive(Debug, Clone, PartialEq)]
pub enum Budget {
    /// One amount.
    Amount {
        /// The amount.
        value: f64,
        /// `USD`, `EUR` or `GBP` (`USD` when none was named).
        currency: Currency,
    },
    /// A range, low to high.
    Range {
        /// Lower bound.
        low: f64,
        /// Upper bound.
        high: f64,
        /// As for `Amount`.
        currency: Currency,
    },
    /// Said outright: there is no budget.
    NoBudget,
}

const NO_BUDGET: [&str; 9] = [
    "no budget",
    "don't have a budget",
    "do not have a budget",
    "haven't got a budget",
    "there is no budget",
    "zero budget",
    "nothing budgeted",
    "not budgeted",
    "no money",
];

// Words after a number that make it something other than money.
const NOT_MONEY: [&str; 22] = [
    "people",
    "employees",
    "staff",
    "users",
    "seats",
    "agents",
    "customers",
    "tickets",
    "offices",
    "days",
    "weeks",
    "months",
    "years",
    "hours",
    "minutes",
    "percent",
    "times",
    "licenses",
    "locations",
    "requests",
    "calls",
    "members",
];

fn unit(w: &str) -> Option<f64> {
    const UNITS: [&str; 20] = [
        "zero",
        "one",
        "two",
        "three",
        "four",
        "five",
        "six",
        "seven",
        "eight",
        "nine",
        "ten",
        "eleven",
        "twelve",
        "thirteen",
        "fourteen",
        "fifteen",
        "sixteen",
        "seventeen",
        "eighteen",
        "nineteen",
    ];
    const TENS: [&str; 8] = [
        "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety",
    ];
    if let Some(i) = UNITS.iter().position(|u| *u == w) {
        return Some(i as f64);
    }
    TENS.iter()
        .position(|t| *t == w)
        .map(|i| (i as f64 + 2.0) * 10.0)
}

fn multiplier(w: &str) -> Option<f64> {
    match w {
        "hundred" => Some(100.0),
        "thousand" | "grand" | "k" => Some(1e3),
        "million" | "mil" | "m" => Some(1e6),
        "billion" | "bn" => Some(1e9),
        _ => None,
    }
}

fn currency_word(w: &str) -> Option<Currency> {
    match w {
        "dollars" | "dollar" | "bucks" | "usd" => Some("USD"),
        "euros" | "euro" | "eur" => Some("EUR"),
        "pounds" | "pound" | "gbp" | "quid" | "sterling" => Some("GBP"),
        _ => None,
    }
}

fn currency_sym(c: char) -> Currency {
    match c {
        '€' => "EUR",
        '£' => "GBP",
        _ => "USD",
    }
}

/// A number phrase starting at `i`: its value, the index after it, and whether its size came
/// from a trailing multiplier word (so a range's first half can borrow it).
fn number_at(t: &[Tok], i: usize) -> Option<(f64, usize, Option<f64>)> {
    let mut j = i;
    let (mut total, mut current, mut seen, mut last_mult) = (0.0f64, 0.0f64, false, None);
    // "half a million", "a hundred thousand", "a million": the multiplier applies to 0.5 or 1.
    let word = |k: usize| match t.get(k) {
        Some(Tok::Word(w)) => Some(w.as_str()),
        _ => None,
    };
    let lead_in = match (word(j), word(j + 1), word(j + 2)) {
        (Some("half"), Some("a"), Some(m)) if multiplier(m).is_some() => Some((0.5, 2)),
        (Some("a"), Some(m), _) if multiplier(m).is_some() => Some((1.0, 1)),
        _ => None,
    };
    if let Some((value, skip)) = lead_in {
        current = value;
        j += skip;
        seen = true;
    }
    while let Some(tok) = t.get(j) {
        match tok {
            Tok::Num(n) if !seen || current == 0.0 && total == 0.0 => {
                current = *n;
                seen = true;
            }
            Tok::Word(w) => {
                if let Some(u) = unit(w) {
                    if seen && current >= 20.0 && current % 10.0 == 0.0 && u < 10.0 {
                        current += u; // twenty five
                    } else if seen && current != 0.0 && last_mult.is_none() {
                        break;
                    } else {
                        current += u;
                    }
                    seen = true;
                } else if let Some(m) = multiplier(w) {
                    if !seen {
                        break;
                    }
                    if m == 100.0 {
                        current = if current == 0.0 {
                            100.0
                        } else {
                            current * 100.0
                        };
                    } else {
                        total += if current == 0.0 { 1.0 } else { current } * m;
                        current = 0.0;
                    }
                    last_mult = Some(m);
                } else if w == "and"
                    && seen
                    && t.get(j + 1)
                        .is_some_and(|n| matches!(n, Tok::Word(x) if unit(x).is_some()))
                {
                    // "one hundred and fifty"
                } else {
                    break;
                }
            }
            _ => break,
        }
        j += 1;
    }
    seen.then_some((total + current, j, last_mult))
}

/// The budget an answer states, if it states one. `asked` says the question was about the
/// budget, so bare amounts count; otherwise a currency or a money word must be near.
pub fn parse_budget(text: &str, asked: bool) -> Option<Budget> {
    let t = tokens(text);
    let w = words(text);
    let mut found: Option<Budget> = None;
    let money_context = asked
        || [
            "budget", "spend", "afford", "cost", "price", "pay", "invest",
        ]
        .iter()
        .any(|k| w.iter().any(|x| x.starts_with(k)));
    let mut i = 0;
    while i < t.len() {
        let sym = match t.get(i) {
            Some(Tok::Sym(c)) => Some(currency_sym(*c)),
            _ => None,
        };
        let start = if sym.is_some() { i + 1 } else { i };
        let between = i > 0 && matches!(&t[i - 1], Tok::Word(x) if x == "between");
        let Some((mut low, after, low_mult)) = number_at(&t, start) else {
            i += 1;
            continue;
        };
        let mut currency = sym;
        let mut end = after;
        let mut high = None;
        // A range: "20 to 30k", "20-30k", "between 20k and 30k".
        let joiner = match t.get(end) {
            Some(Tok::Word(x)) if x == "to" || (x == "and" && between) => true,
            Some(Tok::Punct('-')) => true,
            _ => false,
        };
        if joiner {
            let second = if matches!(t.get(end + 1), Some(Tok::Sym(_))) {
                end + 2
            } else {
                end + 1
            };
            if let Some(Tok::Sym(c)) = t.get(end + 1) {
                currency = currency.or(Some(currency_sym(*c)));
            }
            if let Some((h, after_h, h_mult)) = number_at(&t, second) {
                if low_mult.is_none()
                    && let Some(m) = h_mult
                    && low * m <= h
                {
                    low *= m; // "twenty to thirty thousand"
                } else if low_mult.is_none() && low > 0.0 && low < h / 50.0 {
                    // "20-30k": the suffix was on the second number only.
                    for m in [1e3, 1e6] {
                        if low * m <= h && low * m * 1e3 > h {
                            low *= m;
                            break;
                        }
                    }
                }
                high = Some(h);
                end = after_h;
            }
        }
        // Currency word after the amount; then rule out counts ("40 people").
        if let Some(Tok::Word(x)) = t.get(end) {
            if let Some(c) = currency_word(x) {
                currency = currency.or(Some(c));
                end += 1;
            } else if NOT_MONEY.iter().any(|n| x.starts_with(n)) {
                i = end;
                continue;
            }
        }
        if matches!(t.get(end), Some(Tok::Punct('%'))) {
            i = end;
            continue;
        }
        let value = high.unwrap_or(low);
        let plausible = value >= 100.0 && (currency.is_some() || money_context);
        if plausible {
            let currency = currency.unwrap_or("USD");
            found = Some(match high {
                Some(h) if h > low => Budget::Range {
                    low,
                    high: h,
                    currency,
                },
                _ => Budget::Amount { value, currency },
            });
            break;
        }
        i = end.max(i + 1);
    }
    if found.is_none() && NO_BUDGET.iter().any(|p| !find_phrase(&w, p).is_empty()) {
        found = Some(Budget::NoBudget);
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn amount(v: f64, c: Currency) -> Option<Budget> {
        Some(Budget::Amount {
            value: v,
            currency: c,
        })
    }

    #[test]
    fn spelled_and_digit_amounts() {
        assert_eq!(
            parse_budget("Roughly eighty thousand for the first year.", true),
            amount(80_000.0, "USD")
        );
        assert_eq!(
            parse_budget("We could do 80k.", true),
            amount(80_000.0, "USD")
        );
        assert_eq!(
            parse_budget("about $15,000", false),
            amount(15_000.0, "USD")
        );
        assert_eq!(
            parse_budget("one hundred and fifty thousand euros", true),
            amount(150_000.0, "EUR")
        );
        assert_eq!(
            parse_budget("half a million pounds", false),
            amount(500_000.0, "GBP")
        );
        assert_eq!(
            parse_budget("twenty five thousand dollars", false),
            amount(25_000.0, "USD")
        );
        assert_eq!(
            parse_budget("a hundred grand", true),
            amount(100_000.0, "USD")
        );
    }

    #[test]
    fn ranges_counts_and_none() {
        assert_eq!(
            parse_budget("somewhere between twenty to thirty thousand", true),
            Some(Budget::Range {
                low: 20_000.0,
                high: 30_000.0,
                currency: "USD"
            })
        );
        assert_eq!(
            parse_budget("between 20k and 30k euros", true),
            Some(Budget::Range {
                low: 20_000.0,
                high: 30_000.0,
                currency: "EUR"
            })
        );
        assert_eq!(
            parse_budget("€40-60k", false),
            Some(Budget::Range {
                low: 40_000.0,
                high: 60_000.0,
                currency: "EUR"
            })
        );
        assert_eq!(parse_budget("We have 40 people on the team.", true), None);
        assert_eq!(parse_budget("We have 400 employees.", false), None);
        assert_eq!(
            parse_budget("Honestly we have no budget for this yet.", true),
            Some(Budget::NoBudget)
        );
        assert_eq!(parse_budget("I'd say it went well.", false), None);
    }
}
