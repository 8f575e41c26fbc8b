//! PTB tokenization as pycocoevalcap applies it to captions before BLEU/CIDEr.
//!
//! pycocoevalcap (`tokenizer/ptbtokenizer.py`) writes every caption on its own line (embedded
//! `\n` replaced by a space), runs Stanford CoreNLP 3.4.1
//! `edu.stanford.nlp.process.PTBTokenizer -preserveLines -lowerCase` over the file, splits each
//! output line on spaces and drops the tokens in [`PTB_PUNCTUATIONS`].
//!
//! This module is a hand-written port of the lexer behaviour that captions exercise, written
//! from the tokenizer's observable output (checked against the jar by
//! `metrics/tests/ptb_parity.rs`):
//!
//! - lower-casing happens **after** tokenization, so bracket tokens come out as `-lrb-`,
//!   `-rrb-`, `-lsb-`, ... and are **not** removed by the upper-case filter entries;
//! - clitics split off: `'s 'm 'd 're 've 'll` (`it's` -> `it 's`) and `n't` (`can't` -> `ca
//!   n't`, `won't` -> `wo n't`); `cannot gonna gotta wanna lemme gimme` split in two,
//!   `'tis`/`'twas` -> `'t is`/`'t was`; apostrophe words (`o'clock`, `ma'am`, `'90s`, `'em`,
//!   `'n'`, `y'`) stay whole;
//! - quotes become `` ` `` / `` `` `` / `'` / `''` (filtered), `...`/`…`/`. . .` are dropped,
//!   `?!`/`!!`-style runs are kept as one token, `--` (and 2..4 hyphens, dashes `—`, `–`) are
//!   dropped, 5+ hyphens are kept;
//! - numbers keep internal `.`, `,` and `:` between digits and a leading sign or point (`3.5`,
//!   `1,000`, `10:30`, `-5`, `.5`); `$`, `%`, `#` split from them; `£` -> `#`, `€` -> `$`,
//!   `¢` -> `cents`; `½ ¼ ¾ ⅓ ⅔` -> `1/2` ...;
//! - hyphenated words, `a/b` slashes, `a_b`, dotted names (`www.example.com`), e-mails, URLs,
//!   `@user`, `#tag` and all-capital `AT&T` stay one token; other symbols are single tokens;
//! - a final period stays on abbreviations (`dr.`, `mr.`, `st.`, `etc.`, `u.s.`, `p.m.`,
//!   single letters, `no.` before a number, ...), and on any word followed by `,;:`;
//! - characters the lexer cannot tokenize (astral-plane symbols such as emoji, most currency
//!   signs of U+20A0..U+20CF) are deleted.

/// Tokens pycocoevalcap drops after tokenization.
pub const PTB_PUNCTUATIONS: [&str; 17] = [
    "''", "'", "``", "`", "-LRB-", "-RRB-", "-LCB-", "-RCB-", ".", "?", "!", ",", ":", "-", "--",
    "...", ";",
];

/// Abbreviations whose final period always stays attached (any case).
const ABBREV_ALWAYS: &[&str] = &[
    "jan", "feb", "mar", "apr", "jun", "jul", "aug", "sep", "sept", "oct", "nov", "dec", "mon",
    "tue", "tues", "wed", "thu", "thurs", "fri", "ala", "ariz", "calif", "colo", "conn", "ct",
    "dak", "fla", "ga", "ind", "kan", "kans", "ky", "md", "mich", "minn", "mo", "mont", "neb",
    "nev", "okla", "penn", "tenn", "va", "vt", "wis", "wisc", "wyo", "inc", "co", "cos", "corp",
    "ltd", "plc", "rt", "bancorp", "dept", "bhd", "assn", "univ", "intl", "sys", "tel", "est",
    "ext", "sq", "jr", "sr", "bros", "blvd", "rd", "esq", "etc", "al", "seq", "bldg", "mr", "mrs",
    "ms", "dr", "drs", "prof", "profs", "sen", "sens", "rep", "reps", "atty", "attys", "lt", "col",
    "gen", "messrs", "gov", "govs", "adm", "rev", "maj", "sgt", "cpl", "pvt", "capt", "st", "ste",
    "ave", "pres", "lieut", "hon", "brig", "cmdr", "comdr", "pfc", "spc", "supt", "det", "mme",
    "mlle", "invt", "elec", "natl", "mt", "cf", "cie", "ft", "vs", "alex", "wm", "jos", "treas",
    "ph", "ph.d", "ed.d",
];

/// Abbreviations that keep their period only when capitalised (`Mass.` but `mass .`).
const ABBREV_CAPITALISED: &[&str] = &[
    "ark", "del", "ill", "la", "mass", "miss", "ore", "pa", "tex", "wash",
];

/// Abbreviations that keep their period unless written in all capitals.
const ABBREV_NOT_ALL_CAPS: &[&str] = &["pty", "mfg", "mtg"];

/// Abbreviations that keep their period only before a number (`No. 5`).
const ABBREV_BEFORE_NUMBER: &[&str] = &["no", "nos", "art", "pp", "ca", "fig"];

/// After a single-letter abbreviation (`b.`), these capitalised words mark a sentence start and
/// the period splits off.
const SENTENCE_STARTERS: &[&str] = &[
    "the", "a", "an", "we", "you", "they", "she", "he", "it", "this", "that", "these", "there",
    "then", "their", "her", "our", "in", "at", "as", "if", "but", "so", "when", "what", "while",
    "after", "since", "some", "many", "one", "here", "now", "however", "yet", "such",
];

/// Split into two tokens (CoreNLP's "assimilations").
const ASSIMILATIONS: &[(&str, usize)] = &[
    ("cannot", 3),
    ("gonna", 3),
    ("gotta", 3),
    ("wanna", 3),
    ("lemme", 3),
    ("gimme", 3),
];

/// Currency prefixes written before `$` (`US$`).
const DOLLAR_PREFIXES: &[&str] = &["us", "a", "c", "hk", "nz", "s", "au", "can", "nt"];

fn is_space(c: char) -> bool {
    c.is_whitespace() || matches!(c, '\u{200B}' | '\u{FEFF}')
}

fn is_apos(c: char) -> bool {
    c == '\'' || c == '\u{2019}'
}

fn is_letter(c: char) -> bool {
    c.is_alphabetic()
}

fn is_digit(c: char) -> bool {
    c.is_ascii_digit()
}

fn is_alnum(c: char) -> bool {
    is_letter(c) || is_digit(c)
}

fn fraction(c: char) -> Option<&'static str> {
    Some(match c {
        '\u{00BD}' => "1/2",
        '\u{00BC}' => "1/4",
        '\u{00BE}' => "3/4",
        '\u{2153}' => "1/3",
        '\u{2154}' => "2/3",
        _ => return None,
    })
}

/// Characters the lexer deletes.
fn untokenizable(c: char) -> bool {
    let u = c as u32;
    u > 0xFFFF
        || (('\u{20A0}'..='\u{20CF}').contains(&c) && c != '\u{20AC}' && c != '\u{20A4}')
        || c == '\u{2012}'
        || c.is_control()
}

struct Lexer {
    /// The line, then `\n` and the next line (which lookahead rules see, as the jar does when
    /// it reads all captions from one file).
    s: Vec<char>,
    /// Where the line ends in `s`.
    end: usize,
    out: Vec<String>,
}

impl Lexer {
    fn at(&self, i: usize) -> Option<char> {
        self.s.get(i).copied()
    }

    fn starts_with(&self, i: usize, pat: &str) -> bool {
        (i..).zip(pat.chars()).all(|(k, p)| self.at(k) == Some(p))
    }

    /// `pat` is lower-case ASCII.
    fn starts_with_ci(&self, i: usize, pat: &str) -> bool {
        (i..)
            .zip(pat.chars())
            .all(|(k, p)| self.at(k).is_some_and(|c| c.to_ascii_lowercase() == p))
    }

    fn text(&self, a: usize, b: usize) -> String {
        self.s[a..b].iter().collect()
    }

    fn emit(&mut self, t: impl Into<String>) {
        self.out.push(t.into());
    }

    fn letter_at(&self, i: usize) -> bool {
        self.at(i).is_some_and(is_letter)
    }

    fn run(&mut self) {
        let n = self.end;
        let mut i = 0;
        while i < n {
            let c = self.s[i];
            if is_space(c) || untokenizable(c) {
                i += 1;
                continue;
            }
            i = self.token(i);
        }
    }

    /// Lexes one token (or a few) starting at `i`, returns the next position.
    fn token(&mut self, i: usize) -> usize {
        let c = self.s[i];
        let next = self.at(i + 1);
        // Character entities.
        for (ent, rep) in [
            ("&amp;", "&"),
            ("&lt;", "<"),
            ("&gt;", ">"),
            ("&quot;", "''"),
        ] {
            if self.starts_with(i, ent) {
                self.emit(rep);
                return i + ent.chars().count();
            }
        }
        if self.starts_with(i, "&nbsp;") {
            return i + 6;
        }
        // Other entities (&#39;, &eacute;) are kept as they are.
        if c == '&' {
            let mut j = i + 1;
            if self.at(j) == Some('#') {
                j += 1;
            }
            let k = j;
            while self.at(j).is_some_and(|d| d.is_ascii_alphanumeric()) {
                j += 1;
            }
            if j > k && self.at(j) == Some(';') {
                self.emit(self.text(i, j + 1));
                return j + 1;
            }
        }
        // SGML-like tags: <b>, </a>, <br/>.
        if c == '<' && next.is_some_and(|d| is_letter(d) || d == '/' || d == '!') {
            let mut j = i + 1;
            while j < self.end && self.s[j] != '>' && self.s[j] != '<' {
                j += 1;
            }
            if self.at(j) == Some('>') {
                let t: String = self.s[i..=j]
                    .iter()
                    .map(|&c| if c == ' ' { '\u{A0}' } else { c })
                    .collect();
                self.emit(t);
                return j + 1;
            }
        }
        if let Some(j) = self.smiley(i) {
            let t: String = self.s[i..j]
                .iter()
                .map(|&c| match c {
                    '(' => "-LRB-".to_string(),
                    ')' => "-RRB-".to_string(),
                    '[' => "-LSB-".to_string(),
                    ']' => "-RSB-".to_string(),
                    '{' => "-LCB-".to_string(),
                    '}' => "-RCB-".to_string(),
                    c => c.to_string(),
                })
                .collect();
            self.emit(t);
            return j;
        }
        // Quotes and leading apostrophes.
        match c {
            '"' => {
                let open = i == 0 || self.s[i - 1].is_whitespace() || "([{".contains(self.s[i - 1]);
                self.emit(if open { "``" } else { "''" });
                return i + 1;
            }
            '\u{201C}' | '\u{00AB}' => {
                self.emit("``");
                return i + 1;
            }
            '\u{201D}' | '\u{00BB}' => {
                self.emit("''");
                return i + 1;
            }
            '\u{2018}' | '\u{2039}' => {
                self.emit("`");
                return i + 1;
            }
            '\u{203A}' => {
                self.emit("'");
                return i + 1;
            }
            '`' => {
                if next == Some('`') {
                    self.emit("``");
                    return i + 2;
                }
                self.emit("`");
                return i + 1;
            }
            _ => {}
        }
        if is_apos(c) {
            return self.apostrophe_start(i);
        }
        // Brackets.
        let bracket = match c {
            '(' => Some("-LRB-"),
            ')' => Some("-RRB-"),
            '[' => Some("-LSB-"),
            ']' => Some("-RSB-"),
            '{' => Some("-LCB-"),
            '}' => Some("-RCB-"),
            _ => None,
        };
        if let Some(b) = bracket {
            self.emit(b);
            return i + 1;
        }
        if let Some(f) = fraction(c) {
            self.emit(f);
            return i + 1;
        }
        // Numbers with a leading sign, point or comma.
        if matches!(c, '+' | '-' | '.' | ',' | ':') && next.is_some_and(is_digit) {
            return self.word(i, i + 1);
        }
        if c == '.' {
            let mut j = i;
            while self.at(j) == Some('.') {
                j += 1;
            }
            self.emit(if j - i >= 3 { "..." } else { "." });
            return j;
        }
        if c == '\u{2026}' {
            self.emit("...");
            return i + 1;
        }
        if c == '?' || c == '!' {
            let mut j = i;
            while matches!(self.at(j), Some('?' | '!')) {
                j += 1;
            }
            self.emit(self.text(i, j));
            return j;
        }
        if c == '-' {
            let mut j = i;
            while self.at(j) == Some('-') {
                j += 1;
            }
            let k = j - i;
            if k == 1 {
                self.emit("-");
            } else if k <= 4 {
                self.emit("--");
            } else {
                self.emit(self.text(i, j));
            }
            return j;
        }
        if matches!(c, '\u{2014}' | '\u{2013}' | '\u{2015}') {
            self.emit("--");
            return i + 1;
        }
        match c {
            '\u{00A3}' => {
                self.emit("#");
                return i + 1;
            }
            '\u{20AC}' => {
                self.emit("$");
                return i + 1;
            }
            '\u{00A2}' => {
                self.emit("cents");
                return i + 1;
            }
            _ => {}
        }
        if (c == '#' || c == '@') && next.is_some_and(is_letter) {
            let mut j = i + 1;
            while self.at(j).is_some_and(|d| is_alnum(d) || d == '_') {
                j += 1;
            }
            self.emit(self.text(i, j));
            return j;
        }
        if c == '*' {
            let mut j = i;
            while self.at(j) == Some('*') {
                j += 1;
            }
            self.emit(self.text(i, j));
            return j;
        }
        if is_alnum(c) {
            return self.word(i, i);
        }
        // Any other symbol is a token of its own.
        self.emit(c.to_string());
        i + 1
    }

    /// `[<>]?[:;=][-o*']?[()DPdpO\{@|[]]`
    fn smiley(&self, i: usize) -> Option<usize> {
        let mut j = i;
        if matches!(self.at(j), Some('<' | '>')) {
            j += 1;
        }
        if !matches!(self.at(j), Some(':' | ';' | '=')) {
            return None;
        }
        j += 1;
        if matches!(self.at(j), Some('-' | 'o' | '*' | '\'')) {
            if let Some(k) = self.smiley_end(j + 1) {
                return Some(k);
            }
        }
        self.smiley_end(j)
    }

    fn smiley_end(&self, j: usize) -> Option<usize> {
        if self.letter_at(j + 1) {
            return None;
        }
        if matches!(
            self.at(j),
            Some('(' | ')' | 'D' | 'P' | 'd' | 'p' | 'O' | '\\' | '{' | '@' | '|' | '[' | ']')
        ) {
            Some(j + 1)
        } else {
            None
        }
    }

    /// An apostrophe at the start of a token.
    fn apostrophe_start(&mut self, i: usize) -> usize {
        let c = self.s[i];
        let next = self.at(i + 1);
        if is_apos(c) && next.is_some_and(is_apos) {
            self.emit("''");
            return i + 2;
        }
        // 'n'
        if self.starts_with_ci(i + 1, "n") && self.at(i + 2).is_some_and(is_apos) {
            self.emit(self.text(i, i + 3));
            return i + 3;
        }
        // '90s
        if next.is_some_and(|d| ('2'..='9').contains(&d))
            && self.at(i + 2) == Some('0')
            && matches!(self.at(i + 3), Some('s' | 'S'))
        {
            self.emit(self.text(i, i + 4));
            return i + 4;
        }
        for w in ["em", "cause", "till", "til"] {
            let l = w.len();
            if self.starts_with_ci(i + 1, w) {
                self.emit(self.text(i, i + 1 + l).to_lowercase());
                return i + 1 + l;
            }
        }
        // 'tis, 'twas
        for w in ["tis", "twas"] {
            if self.starts_with_ci(i + 1, w) {
                self.emit("'t");
                return i + 2;
            }
        }
        if let Some(j) = self.clitic(i) {
            return j;
        }
        // A plain quote: opening before a letter sequence of 2+, closing otherwise.
        let open = self.letter_at(i + 1) && self.letter_at(i + 2);
        self.emit(if open { "`" } else { "'" });
        i + 1
    }

    /// `'s 'm 'd 're 've 'll` followed by a non-letter.
    fn clitic(&mut self, i: usize) -> Option<usize> {
        for w in ["s", "m", "d", "re", "ve", "ll"] {
            let l = w.len();
            if self.starts_with_ci(i + 1, w) && !self.letter_at(i + 1 + l) {
                let t = format!("'{}", self.text(i + 1, i + 1 + l));
                self.emit(t);
                return Some(i + 1 + l);
            }
        }
        None
    }

    /// A word or number starting at `i`; `j` is where its alphanumeric body starts.
    fn word(&mut self, i: usize, body: usize) -> usize {
        let n = self.end;
        // URLs.
        for p in ["http://", "https://", "ftp://", "www."] {
            if body == i && self.starts_with_ci(i, p) {
                let mut j = i;
                while j < n && !is_space(self.s[j]) && !"()[]{}<>\"".contains(self.s[j]) {
                    j += 1;
                }
                while j > i + p.len() && ".,;:!?'".contains(self.s[j - 1]) {
                    j -= 1;
                }
                self.emit(self.text(i, j));
                return j;
            }
        }
        // E-mail addresses.
        if body == i {
            if let Some(j) = self.email(i) {
                self.emit(self.text(i, j));
                return j;
            }
        }
        if body != i {
            // A number led by a sign, point, comma or colon: digits and separators only.
            let mut j = body;
            while j < n
                && (is_digit(self.s[j])
                    || (".,:/".contains(self.s[j]) && self.at(j + 1).is_some_and(is_digit)))
            {
                j += 1;
            }
            self.emit(self.text(i, j));
            return j;
        }
        let mut j = body;
        // Inside a number ("3.5", "12:00"), a letter right after a digit ends the token ("1.5x",
        // "12:00pm").
        let mut decimal = false;
        loop {
            let seg_start = j;
            while j < n && is_alnum(self.s[j]) {
                if decimal && is_letter(self.s[j]) && j > seg_start && is_digit(self.s[j - 1]) {
                    break;
                }
                j += 1;
            }
            if j < n && is_letter(self.s[j]) {
                break;
            }
            let (Some(conn), Some(after)) = (self.at(j), self.at(j + 1)) else {
                break;
            };
            let before = self.s[j - 1];
            let join = match conn {
                '-' => is_alnum(before) && is_alnum(after),
                // Letters around `.`, `!` or `?` stay one word ("www.example.com", "bird!It").
                '.' | '!' | '?' if is_letter(before) && is_letter(after) => true,
                // Digits around `.`, `,` or `:` only inside a number ("3.5", "1,000", "10:30").
                '.' | ',' | ':' => {
                    is_digit(before)
                        && is_digit(after)
                        && self.s[body..j]
                            .iter()
                            .all(|&c| is_digit(c) || ".,:".contains(c))
                }
                '/' | '_' => is_alnum(before) && is_alnum(after),
                '&' => {
                    let mut k = j + 1;
                    while self.at(k).is_some_and(is_alnum) {
                        k += 1;
                    }
                    seg_start < j
                        && self.s[seg_start..j].iter().all(|c| c.is_uppercase())
                        && self.s[j + 1..k].iter().all(|c| c.is_uppercase())
                }
                _ => false,
            };
            if !join {
                break;
            }
            decimal = matches!(conn, '.' | ',' | ':') && is_digit(before);
            j += 1;
        }
        // "4 1/2": an integer, one space and a fraction are one token (with a no-break space).
        if self.s[i..j].iter().all(|&c| is_digit(c)) && self.at(j) == Some(' ') {
            let mut k = j + 1;
            while k < n && is_digit(self.s[k]) {
                k += 1;
            }
            if k > j + 1 && self.at(k) == Some('/') && self.at(k + 1).is_some_and(is_digit) {
                k += 1;
                while k < n && is_digit(self.s[k]) {
                    k += 1;
                }
                let t = format!("{}\u{A0}{}", self.text(i, j), self.text(j + 1, k));
                self.emit(t);
                return k;
            }
        }
        let end = j;
        let word = self.text(i, end);
        let lower = word.to_lowercase();
        // Currency prefixes (US$).
        if self.at(end) == Some('$') && DOLLAR_PREFIXES.contains(&lower.as_str()) && body == i {
            self.emit(format!("{word}$"));
            return end + 1;
        }
        // Apostrophes inside or after the word.
        if self.at(end).is_some_and(is_apos) {
            return self.word_apostrophe(i, end);
        }
        // A final period.
        if self.at(end) == Some('.') && body == i && self.attach_period(&word, end) {
            self.emit(format!("{word}."));
            return end + 1;
        }
        self.emit_word(&word);
        end
    }

    fn email(&self, i: usize) -> Option<usize> {
        let n = self.end;
        let mut j = i;
        while j < n && (is_alnum(self.s[j]) || "._+-".contains(self.s[j])) {
            j += 1;
        }
        if j == i || self.at(j) != Some('@') {
            return None;
        }
        let mut k = j + 1;
        let mut dots = 0;
        let host = k;
        while k < n && (is_alnum(self.s[k]) || self.s[k] == '-' || self.s[k] == '.') {
            if self.s[k] == '.' {
                dots += 1;
            }
            k += 1;
        }
        while k > host && self.s[k - 1] == '.' {
            k -= 1;
            dots -= 1;
        }
        (dots > 0 && k > host).then_some(k)
    }

    /// Emits a finished word, splitting the assimilations.
    fn emit_word(&mut self, word: &str) {
        let lower = word.to_lowercase();
        for (w, at) in ASSIMILATIONS {
            if lower == *w {
                let chars: Vec<char> = word.chars().collect();
                self.emit(chars[..*at].iter().collect::<String>());
                self.emit(chars[*at..].iter().collect::<String>());
                return;
            }
        }
        self.emit(word);
    }

    /// The word `s[i..end]` is followed by an apostrophe at `end`.
    fn word_apostrophe(&mut self, i: usize, end: usize) -> usize {
        let word = self.text(i, end);
        let lower = word.to_lowercase();
        let wlen = end - i;
        let after = end + 1;
        // n't (followed by any letters).
        let all_letters = self.s[i..end].iter().all(|&c| is_letter(c));
        if wlen >= 2
            && all_letters
            && lower.ends_with('n')
            && self.at(after).is_some_and(|c| c == 't' || c == 'T')
        {
            let stem: String = self.s[i..end - 1].iter().collect();
            let mut k = after + 1;
            while self.at(k).is_some_and(is_letter) {
                k += 1;
            }
            self.emit_word(&stem);
            let tail = format!("n'{}", self.text(after, k));
            self.emit(tail);
            return k;
        }
        // 'n' between words (rock'n'roll).
        if self.starts_with_ci(after, "n") && self.at(after + 1).is_some_and(is_apos) {
            self.emit_word(&word);
            self.emit(self.text(end, end + 3));
            return end + 3;
        }
        // Clitics.
        for w in ["s", "m", "d", "re", "ve", "ll"] {
            let l = w.len();
            if self.starts_with_ci(after, w) && !self.letter_at(after + l) {
                self.emit(word.clone());
                self.emit(format!("'{}", self.text(after, after + l)));
                return after + l;
            }
        }
        // Apostrophe words: o'clock, l'amour, ma'am.
        let mut k = after;
        while self.at(k).is_some_and(is_letter) {
            k += 1;
        }
        let rest = k - after;
        if all_letters && rest > 0 {
            let first = lower.chars().next().unwrap_or(' ');
            if wlen == 1 && first != 'i' && first != 'y' && rest >= 3 {
                let t = self.text(i, k);
                self.emit(t);
                return k;
            }
            let last = lower.chars().last().unwrap_or(' ');
            let a = self.s[after];
            if wlen >= 2 && "aeiouy".contains(last) && ("aeiou".contains(a) || a.is_uppercase()) {
                let t = self.text(i, k);
                self.emit(t);
                return k;
            }
        }
        if all_letters && matches!(lower.as_str(), "ol" | "dunkin" | "somethin") {
            self.emit(format!("{word}'"));
            return after;
        }
        if all_letters && wlen == 1 && "ldjy".contains(lower.as_str()) && self.letter_at(after) {
            self.emit(format!("{word}'"));
            return after;
        }
        self.emit_word(&word);
        end
    }

    /// Whether the period after `word` (at `dot`) stays attached.
    fn attach_period(&self, word: &str, dot: usize) -> bool {
        let next = self.at(dot + 1);
        if next.is_some_and(|c| matches!(c, ',' | ';' | ':')) {
            return true;
        }
        let lower = word.to_lowercase();
        let chars: Vec<char> = word.chars().collect();
        if !chars.iter().all(|&c| is_letter(c) || c == '.') {
            return false;
        }
        // Acronyms: u.s, e.g, p.m.
        if lower.contains('.') {
            return lower.split('.').all(|p| p.chars().count() == 1)
                || ABBREV_ALWAYS.contains(&lower.as_str());
        }
        let spaced = next.is_none_or(is_space);
        // The next word after spaces.
        let mut k = dot + 1;
        while self.at(k).is_some_and(is_space) {
            k += 1;
        }
        let mut e = k;
        while self.at(e).is_some_and(is_letter) {
            e += 1;
        }
        let next_word = self.text(k, e);
        // `No. 5`, `No.5`: at most one whitespace character, then a digit.
        let next_digit = self.at(dot + 1).is_some_and(is_digit)
            || (self.at(dot + 1).is_some_and(is_space) && self.at(dot + 2).is_some_and(is_digit));
        if chars.len() == 1 {
            if !spaced {
                return true;
            }
            let starter = SENTENCE_STARTERS.contains(&next_word.to_lowercase().as_str())
                && self.at(e).is_some_and(is_space);
            let cap = next_word.chars().next().is_some_and(|c| c.is_uppercase())
                && (next_word.chars().skip(1).all(|c| c.is_lowercase())
                    || next_word.chars().all(|c| c.is_uppercase()));
            // "Mr." and "Ms." after a single letter also start a sentence.
            let title = matches!(next_word.as_str(), "Mr" | "Ms" | "MR")
                && self.at(e) == Some('.')
                && self.at(e + 1).is_some_and(is_space);
            return !(title || starter && cap);
        }
        if ABBREV_ALWAYS.contains(&lower.as_str()) {
            return true;
        }
        if ABBREV_CAPITALISED.contains(&lower.as_str()) {
            return chars[0].is_uppercase();
        }
        if ABBREV_NOT_ALL_CAPS.contains(&lower.as_str()) {
            return !chars.iter().all(|c| c.is_uppercase());
        }
        if ABBREV_BEFORE_NUMBER.contains(&lower.as_str()) {
            return next_digit;
        }
        false
    }
}

/// The raw CoreNLP 3.4.1 `PTBTokenizer -preserveLines -lowerCase` tokens of one line (before
/// pycocoevalcap's filter), as the last line of the input.
pub fn ptb_tokens(line: &str) -> Vec<String> {
    ptb_tokens_before(line, None)
}

/// [`ptb_tokens`] for a line followed, after its newline, by `following` (the next lines of the
/// same input, joined by `\n`; only their start matters): a few lookahead rules (a period
/// after `No` before a number, after a single letter before a sentence-initial word) see the
/// next line, as the jar does.
pub fn ptb_tokens_before(line: &str, following: Option<&str>) -> Vec<String> {
    let mut s: Vec<char> = line.chars().collect();
    let end = s.len();
    if let Some(following) = following {
        s.push('\n');
        s.extend(following.chars());
    }
    let mut lx = Lexer {
        s,
        end,
        out: Vec::new(),
    };
    lx.run();
    lx.out.into_iter().map(|t| t.to_lowercase()).collect()
}

fn one_line(caption: &str) -> String {
    caption
        .chars()
        .map(|c| if c == '\n' || c == '\r' { ' ' } else { c })
        .collect()
}

fn filtered(tokens: Vec<String>) -> String {
    tokens
        .into_iter()
        .filter(|t| !PTB_PUNCTUATIONS.contains(&t.as_str()))
        .collect::<Vec<_>>()
        .join(" ")
}

/// One caption as pycocoevalcap's `PTBTokenizer` returns it when the caption is tokenized
/// alone (or last): tokens joined by single spaces, [`PTB_PUNCTUATIONS`] removed.
pub fn ptb_tokenize_line(caption: &str) -> String {
    filtered(ptb_tokens(&one_line(caption)))
}

/// pycocoevalcap's `PTBTokenizer().tokenize` over captions in the order it writes them (image
/// by image, caption by caption): each caption is tokenized with the next one as lookahead.
pub fn ptb_tokenize<S: AsRef<str>>(captions: &[S]) -> Vec<String> {
    ptb_tokens_in_order(captions)
        .into_iter()
        .map(filtered)
        .collect()
}

/// The tokenizer's tokens of each caption, before pycocoevalcap's punctuation filter, the
/// captions tokenized as one input in this order (each with the next ones as lookahead).
pub fn ptb_tokens_in_order<S: AsRef<str>>(captions: &[S]) -> Vec<Vec<String>> {
    let lines: Vec<String> = captions.iter().map(|c| one_line(c.as_ref())).collect();
    (0..lines.len())
        .map(|k| {
            // Two lines of lookahead are more than any rule reads.
            let following = (k + 1 < lines.len()).then(|| {
                lines[k + 1..]
                    .iter()
                    .take(2)
                    .cloned()
                    .collect::<Vec<_>>()
                    .join("\n")
            });
            ptb_tokens_before(&lines[k], following.as_deref())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tok(s: &str) -> String {
        ptb_tokens(s).join(" ")
    }

    #[test]
    fn clitics_and_assimilations() {
        assert_eq!(tok("It's the dog's"), "it 's the dog 's");
        assert_eq!(tok("can't won't isn't"), "ca n't wo n't is n't");
        assert_eq!(tok("they're I'd've"), "they 're i 'd 've");
        assert_eq!(tok("cannot gonna"), "can not gon na");
        assert_eq!(
            tok("'tis o'clock ma'am y'all '90s"),
            "'t is o'clock ma'am y' all '90s"
        );
        assert_eq!(tok("rock'n'roll"), "rock 'n' roll");
    }

    #[test]
    fn brackets_are_lower_cased_and_survive_the_filter() {
        assert_eq!(
            tok("(a) [b] {c}"),
            "-lrb- a -rrb- -lsb- b -rsb- -lcb- c -rcb-"
        );
        assert_eq!(ptb_tokenize_line("(a) [b]"), "-lrb- a -rrb- -lsb- b -rsb-");
    }

    #[test]
    fn numbers_and_symbols() {
        assert_eq!(
            tok("$3.50 1,000 10:30 -5 .5 50%"),
            "$ 3.50 1,000 10:30 -5 .5 50 %"
        );
        assert_eq!(tok("2+2=4 a*b #1 #tag"), "2 +2 = 4 a * b # 1 #tag");
        assert_eq!(tok("£5 €5 ½"), "# 5 $ 5 1/2");
        assert_eq!(tok("4 1/2"), "4\u{A0}1/2");
        assert_eq!(tok("a---b ------"), "a -- b ------");
    }

    #[test]
    fn periods() {
        assert_eq!(
            tok("Dr. Smith in the U.S. street."),
            "dr. smith in the u.s. street ."
        );
        assert_eq!(tok("No. 5 and no. x"), "no. 5 and no . x");
        assert_eq!(tok("J. Smith"), "j. smith");
        assert_eq!(tok("a b. He is"), "a b . he is");
        assert_eq!(tok("A B. THE C. AT&T"), "a b . the c. at&t");
        assert_eq!(tok("dog., cat"), "dog. , cat");
        assert_eq!(tok("Wait... what?!"), "wait ... what ?!");
    }

    #[test]
    fn filter_and_lookahead_across_captions() {
        assert_eq!(
            ptb_tokenize_line("He said \"hi\" -- fine; ok: yes!"),
            "he said hi fine ok yes"
        );
        // "x No." keeps its period only when the next caption starts with a number.
        assert_eq!(ptb_tokenize(&["x No.", "5 a"]), ["x no.", "5 a"]);
        assert_eq!(ptb_tokenize(&["x No.", "a"]), ["x no", "a"]);
        assert_eq!(ptb_tokenize_line("x No."), "x no");
        // A single letter's period splits before a sentence-initial word on the next line.
        assert_eq!(
            ptb_tokenize(&["x b.", "He", "z", "x b.", "Ms., y"]),
            ["x b", "he", "z", "x b.", "ms. y"]
        );
    }

    #[test]
    fn untokenizable_characters_are_deleted() {
        assert_eq!(tok("a \u{1F600} b \u{20B9}5"), "a b 5");
    }
}
