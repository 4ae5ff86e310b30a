//! Tokens for the rule-based scorer: lower-case words, numbers (with their `k`/`m` suffix),
//! and currency symbols, each with its byte span in the original text for quoting.

/// One token.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Tok {
    /// A lower-case word; apostrophes kept ("don't"), hyphens split.
    Word(String),
    /// A number written in digits, with any `k`/`m`/`bn` suffix already applied.
    Num(f64),
    /// `$`, `€` or `£`.
    Sym(char),
    /// `-` or `–` between numbers (a range), or `%`.
    Punct(char),
    /// A sentence boundary: `.`, `!`, `?`, `;`.
    Stop,
}

/// Splits `text` into tokens.
pub(crate) fn tokens(text: &str) -> Vec<Tok> {
    let mut out = Vec::new();
    let chars: Vec<char> = text.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_ascii_digit() {
            let mut s = String::new();
            while i < chars.len()
                && (chars[i].is_ascii_digit()
                    || (matches!(chars[i], ',' | '.')
                        && chars.get(i + 1).is_some_and(|d| d.is_ascii_digit())))
            {
                if chars[i] != ',' {
                    s.push(chars[i]);
                }
                i += 1;
            }
            let mut v: f64 = s.parse().unwrap_or(0.0);
            // Suffix directly attached: 80k, 1.5m, 2bn.
            let rest: String = chars[i..].iter().take(3).collect::<String>().to_lowercase();
            let boundary = |n: usize| chars.get(i + n).is_none_or(|c| !c.is_alphanumeric());
            if rest.starts_with("bn") && boundary(2) {
                v *= 1e9;
                i += 2;
            } else if rest.starts_with('k') && boundary(1) {
                v *= 1e3;
                i += 1;
            } else if rest.starts_with('m') && boundary(1) {
                v *= 1e6;
                i += 1;
            }
            out.push(Tok::Num(v));
            continue;
        }
        if c.is_alphabetic() {
            let mut s = String::new();
            while i < chars.len()
                && (chars[i].is_alphabetic()
                    || (matches!(chars[i], '\'' | '’')
                        && chars.get(i + 1).is_some_and(|d| d.is_alphabetic())))
            {
                let ch = if chars[i] == '’' { '\'' } else { chars[i] };
                s.extend(ch.to_lowercase());
                i += 1;
            }
            out.push(Tok::Word(s));
            continue;
        }
        match c {
            '$' | '€' | '£' => out.push(Tok::Sym(c)),
            '-' | '–' | '%' => out.push(Tok::Punct(if c == '–' { '-' } else { c })),
            '.' | '!' | '?' | ';' => out.push(Tok::Stop),
            _ => {}
        }
        i += 1;
    }
    out
}

/// The words of `text`, lower-case, for phrase matching.
pub(crate) fn words(text: &str) -> Vec<String> {
    tokens(text)
        .into_iter()
        .filter_map(|t| match t {
            Tok::Word(w) => Some(w),
            Tok::Num(n) => Some(format!("{n}")),
            _ => None,
        })
        .collect()
}

const NEGATIONS: [&str; 14] = [
    "not", "no", "never", "don't", "doesn't", "didn't", "isn't", "aren't", "wasn't", "won't",
    "can't", "cannot", "nobody", "without",
];

/// Whether a negation occurs in the `window` words before position `at`.
pub(crate) fn negated(words: &[String], at: usize, window: usize) -> bool {
    words[at.saturating_sub(window)..at]
        .iter()
        .any(|w| NEGATIONS.contains(&w.as_str()) || w.ends_with("n't"))
}

/// Every position where the words of `phrase` occur in `words`.
pub(crate) fn find_phrase(words: &[String], phrase: &str) -> Vec<usize> {
    let p: Vec<&str> = phrase.split(' ').collect();
    if p.is_empty() || words.len() < p.len() {
        return Vec::new();
    }
    (0..=words.len() - p.len())
        .filter(|&i| {
            p.iter().enumerate().all(|(j, pw)| {
                let w = &words[i + j];
                // A trailing '*' matches any ending: "frustrat*".
                match pw.strip_suffix('*') {
                    Some(stem) => w.starts_with(stem),
                    None => w == pw,
                }
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_suffixes_and_symbols() {
        assert_eq!(
            tokens("About $15,000, maybe 80k or 1.5m."),
            vec![
                Tok::Word("about".into()),
                Tok::Sym('$'),
                Tok::Num(15_000.0),
                Tok::Word("maybe".into()),
                Tok::Num(80_000.0),
                Tok::Word("or".into()),
                Tok::Num(1_500_000.0),
                Tok::Stop,
            ]
        );
        assert_eq!(words("We don’t NEED it"), vec!["we", "don't", "need", "it"]);
        let w = words("it is not a big problem");
        assert!(negated(&w, 5, 3));
        assert_eq!(find_phrase(&w, "big problem"), vec![4]);
        assert_eq!(find_phrase(&words("so frustrating"), "frustrat*"), vec![1]);
    }
}
