//! VQA accuracy: the official GT-Vision-Lab scorer (`vqaEval.py` at a013f00) and MimIC's
//! variant (`testbed/evaluate/metrics/vqa_accuracy`).
//!
//! Official, per question:
//! 1. every GT answer and the prediction: `\n` and `\t` become spaces, then strip;
//! 2. **only if the ten GT answers are not all identical**, [`process_punctuation`] then
//!    [`process_digit_article`] on every GT answer and on the prediction (so "Yes" against
//!    ten "yes" scores 0);
//! 3. `acc = mean_i min(1, #{j != i: gt_j == pred} / 3)`.
//!
//! Overall, per question type and per answer type are `100 * mean(acc)` rounded to 2 decimals
//! with Python 2's `round` (correctly rounded, halves away from zero); per question
//! `round(100 * acc, 2)`.
//!
//! MimIC: the prediction is cleaned as in 1.; prediction and every GT answer (not cleaned)
//! always go through both normalisations; nothing is rounded.
//!
//! `\d` in the official regexes is ASCII (Python 2, no `re.UNICODE`); this port uses ASCII
//! digits for both variants (MimIC's Python 3 regexes would also take other Unicode digits).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{py_split, py_strip, MetricsError};

/// Characters handled by `processPunctuation` (not `:`, `'` or `.`; `.` has its own rule).
pub const PUNCT: [char; 21] = [
    ';', '/', '[', ']', '"', '{', '}', '(', ')', '=', '+', '\\', '_', '-', '>', '<', '@', '`', ',',
    '?', '!',
];

/// `manualMap`: number words to digits.
pub const NUMBER_WORDS: [(&str, &str); 12] = [
    ("none", "0"),
    ("zero", "0"),
    ("one", "1"),
    ("two", "2"),
    ("three", "3"),
    ("four", "4"),
    ("five", "5"),
    ("six", "6"),
    ("seven", "7"),
    ("eight", "8"),
    ("nine", "9"),
    ("ten", "10"),
];

/// Dropped words.
pub const ARTICLES: [&str; 3] = ["a", "an", "the"];

/// The official `contractions` map, every entry (including the keys with capitals, which
/// never match lower-cased words, and `somebody'd -> somebodyd`).
pub const CONTRACTIONS: [(&str, &str); 120] = [
    ("aint", "ain't"),
    ("arent", "aren't"),
    ("cant", "can't"),
    ("couldve", "could've"),
    ("couldnt", "couldn't"),
    ("couldn'tve", "couldn't've"),
    ("couldnt've", "couldn't've"),
    ("didnt", "didn't"),
    ("doesnt", "doesn't"),
    ("dont", "don't"),
    ("hadnt", "hadn't"),
    ("hadnt've", "hadn't've"),
    ("hadn'tve", "hadn't've"),
    ("hasnt", "hasn't"),
    ("havent", "haven't"),
    ("hed", "he'd"),
    ("hed've", "he'd've"),
    ("he'dve", "he'd've"),
    ("hes", "he's"),
    ("howd", "how'd"),
    ("howll", "how'll"),
    ("hows", "how's"),
    ("Id've", "I'd've"),
    ("I'dve", "I'd've"),
    ("Im", "I'm"),
    ("Ive", "I've"),
    ("isnt", "isn't"),
    ("itd", "it'd"),
    ("itd've", "it'd've"),
    ("it'dve", "it'd've"),
    ("itll", "it'll"),
    ("let's", "let's"),
    ("maam", "ma'am"),
    ("mightnt", "mightn't"),
    ("mightnt've", "mightn't've"),
    ("mightn'tve", "mightn't've"),
    ("mightve", "might've"),
    ("mustnt", "mustn't"),
    ("mustve", "must've"),
    ("neednt", "needn't"),
    ("notve", "not've"),
    ("oclock", "o'clock"),
    ("oughtnt", "oughtn't"),
    ("ow's'at", "'ow's'at"),
    ("'ows'at", "'ow's'at"),
    ("'ow'sat", "'ow's'at"),
    ("shant", "shan't"),
    ("shed've", "she'd've"),
    ("she'dve", "she'd've"),
    ("she's", "she's"),
    ("shouldve", "should've"),
    ("shouldnt", "shouldn't"),
    ("shouldnt've", "shouldn't've"),
    ("shouldn'tve", "shouldn't've"),
    ("somebody'd", "somebodyd"),
    ("somebodyd've", "somebody'd've"),
    ("somebody'dve", "somebody'd've"),
    ("somebodyll", "somebody'll"),
    ("somebodys", "somebody's"),
    ("someoned", "someone'd"),
    ("someoned've", "someone'd've"),
    ("someone'dve", "someone'd've"),
    ("someonell", "someone'll"),
    ("someones", "someone's"),
    ("somethingd", "something'd"),
    ("somethingd've", "something'd've"),
    ("something'dve", "something'd've"),
    ("somethingll", "something'll"),
    ("thats", "that's"),
    ("thered", "there'd"),
    ("thered've", "there'd've"),
    ("there'dve", "there'd've"),
    ("therere", "there're"),
    ("theres", "there's"),
    ("theyd", "they'd"),
    ("theyd've", "they'd've"),
    ("they'dve", "they'd've"),
    ("theyll", "they'll"),
    ("theyre", "they're"),
    ("theyve", "they've"),
    ("twas", "'twas"),
    ("wasnt", "wasn't"),
    ("wed've", "we'd've"),
    ("we'dve", "we'd've"),
    ("weve", "we've"),
    ("werent", "weren't"),
    ("whatll", "what'll"),
    ("whatre", "what're"),
    ("whats", "what's"),
    ("whatve", "what've"),
    ("whens", "when's"),
    ("whered", "where'd"),
    ("wheres", "where's"),
    ("whereve", "where've"),
    ("whod", "who'd"),
    ("whod've", "who'd've"),
    ("who'dve", "who'd've"),
    ("wholl", "who'll"),
    ("whos", "who's"),
    ("whove", "who've"),
    ("whyll", "why'll"),
    ("whyre", "why're"),
    ("whys", "why's"),
    ("wont", "won't"),
    ("wouldve", "would've"),
    ("wouldnt", "wouldn't"),
    ("wouldnt've", "wouldn't've"),
    ("wouldn'tve", "wouldn't've"),
    ("yall", "y'all"),
    ("yall'll", "y'all'll"),
    ("y'allll", "y'all'll"),
    ("yall'd've", "y'all'd've"),
    ("y'alld've", "y'all'd've"),
    ("y'all'dve", "y'all'd've"),
    ("youd", "you'd"),
    ("youd've", "you'd've"),
    ("you'dve", "you'd've"),
    ("youll", "you'll"),
    ("youre", "you're"),
    ("youve", "you've"),
];

/// The official `periodStrip.sub("", text, re.UNICODE)` passes `re.UNICODE` (32) as the
/// substitution *count*: only the first 32 qualifying periods are removed.
pub const PERIOD_STRIP_COUNT: usize = 32;

/// Which scorer to reproduce.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum VqaVariant {
    /// GT-Vision-Lab `vqaEval.py`: unanimity rule, 2-decimal rounding.
    #[default]
    Official,
    /// MimIC's `vqa_accuracy`: always normalise, no rounding.
    Mimic,
}

/// One question: the model's answer and the ten annotators' answers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VqaQuestion {
    pub prediction: String,
    pub answers: Vec<String>,
    #[serde(default)]
    pub question_type: Option<String>,
    #[serde(default)]
    pub answer_type: Option<String>,
}

/// Accuracies in percent (0..=100).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VqaReport {
    pub overall: f64,
    pub per_question_type: BTreeMap<String, f64>,
    pub per_answer_type: BTreeMap<String, f64>,
    /// One per question, in input order (official: `round(100 * acc, 2)`).
    pub per_question: Vec<f64>,
}

fn is_digit(b: u8) -> bool {
    b.is_ascii_digit()
}

/// `(\d)(,)(\d)` anywhere in `s` (ASCII digits).
fn has_digit_comma_digit(s: &str) -> bool {
    s.as_bytes()
        .windows(3)
        .any(|w| is_digit(w[0]) && w[1] == b',' && is_digit(w[2]))
}

/// `processPunctuation`: each character of [`PUNCT`] is deleted if `"p "` or `" p"` occurs in
/// the input or the input contains digit-comma-digit, and replaced by a space otherwise; then
/// the period strip `(?!<=\d)(\.)(?!\d)` (a look-ahead typo for a look-behind: every period
/// not followed by an ASCII digit goes), at most [`PERIOD_STRIP_COUNT`] times.
pub fn process_punctuation(text: &str) -> String {
    let comma = has_digit_comma_digit(text);
    let mut out = String::with_capacity(text.len());
    let mut delete = [false; PUNCT.len()];
    for (k, &p) in PUNCT.iter().enumerate() {
        let mut buf = [0u8; 4];
        let ps: &str = p.encode_utf8(&mut buf);
        delete[k] = comma || text.contains(&format!("{ps} ")) || text.contains(&format!(" {ps}"));
    }
    for c in text.chars() {
        match PUNCT.iter().position(|&p| p == c) {
            Some(k) if delete[k] => {}
            Some(_) => out.push(' '),
            None => out.push(c),
        }
    }
    let chars: Vec<char> = out.chars().collect();
    let mut stripped = String::with_capacity(out.len());
    let mut removed = 0;
    for (i, &c) in chars.iter().enumerate() {
        if c == '.'
            && removed < PERIOD_STRIP_COUNT
            && !chars.get(i + 1).is_some_and(|d| d.is_ascii_digit())
        {
            removed += 1;
            continue;
        }
        stripped.push(c);
    }
    stripped
}

/// `processDigitArticle`: lower-case, split on whitespace, number words to digits, drop
/// articles, apply [`CONTRACTIONS`], join with single spaces.
pub fn process_digit_article(text: &str) -> String {
    let lower = text.to_lowercase();
    let words: Vec<&str> = py_split(&lower)
        .map(|w| {
            NUMBER_WORDS
                .iter()
                .find(|(k, _)| *k == w)
                .map_or(w, |(_, v)| *v)
        })
        .filter(|w| !ARTICLES.contains(w))
        .map(|w| {
            CONTRACTIONS
                .iter()
                .find(|(k, _)| *k == w)
                .map_or(w, |(_, v)| *v)
        })
        .collect();
    words.join(" ")
}

/// Both normalisations, in the official order.
pub fn normalize_answer(text: &str) -> String {
    process_digit_article(&process_punctuation(text))
}

fn clean(s: &str) -> String {
    let s: String = s
        .chars()
        .map(|c| if c == '\n' || c == '\t' { ' ' } else { c })
        .collect();
    py_strip(&s).to_string()
}

/// Leave-one-out accuracy of one question in 0..=1 (not in percent).
pub fn question_accuracy<S: AsRef<str>>(
    prediction: &str,
    answers: &[S],
    variant: VqaVariant,
) -> f64 {
    let (pred, gts): (String, Vec<String>) = match variant {
        VqaVariant::Official => {
            let gts: Vec<String> = answers.iter().map(|a| clean(a.as_ref())).collect();
            let pred = clean(prediction);
            let unanimous = gts.iter().all(|g| *g == gts[0]);
            if gts.is_empty() || unanimous {
                (pred, gts)
            } else {
                (
                    normalize_answer(&pred),
                    gts.iter().map(|g| normalize_answer(g)).collect(),
                )
            }
        }
        VqaVariant::Mimic => (
            normalize_answer(&clean(prediction)),
            answers
                .iter()
                .map(|a| normalize_answer(a.as_ref()))
                .collect(),
        ),
    };
    if gts.is_empty() {
        return 0.0;
    }
    let mut sum = 0.0;
    for i in 0..gts.len() {
        let matches = gts
            .iter()
            .enumerate()
            .filter(|&(j, g)| j != i && *g == pred)
            .count();
        sum += (matches as f64 / 3.0).min(1.0);
    }
    sum / gts.len() as f64
}

/// Python 2's `round(x, 2)`: the double's exact decimal value rounded half away from zero,
/// then the nearest double.
pub fn py2_round2(x: f64) -> f64 {
    if !x.is_finite() {
        return x;
    }
    // Rust prints the exact decimal expansion up to the requested precision; 80 places cover
    // every double of this magnitude exactly.
    let s = format!("{:.80}", x.abs());
    let (int, frac) = s.split_once('.').unwrap_or((&s, ""));
    let frac = frac.as_bytes();
    let mut digits: Vec<u8> = int.bytes().chain(frac[..2].iter().copied()).collect();
    if frac[2] >= b'5' {
        // Half or more at the third decimal: round up (ties away from zero).
        let mut i = digits.len();
        loop {
            if i == 0 {
                digits.insert(0, b'1');
                break;
            }
            i -= 1;
            if digits[i] == b'9' {
                digits[i] = b'0';
            } else {
                digits[i] += 1;
                break;
            }
        }
    }
    let n = digits.len();
    let text = format!(
        "{}.{}",
        std::str::from_utf8(&digits[..n - 2]).unwrap_or("0"),
        std::str::from_utf8(&digits[n - 2..]).unwrap_or("0")
    );
    let v: f64 = text.parse().unwrap_or(0.0);
    if x < 0.0 {
        -v
    } else {
        v
    }
}

/// VQA accuracy over a set of questions, as the chosen scorer reports it.
pub fn vqa_accuracy(
    questions: &[VqaQuestion],
    variant: VqaVariant,
) -> Result<VqaReport, MetricsError> {
    if questions.is_empty() {
        return Err(MetricsError::Empty("VQA accuracy"));
    }
    let mut accs = Vec::with_capacity(questions.len());
    let mut by_q: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    let mut by_a: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for (i, q) in questions.iter().enumerate() {
        if q.answers.is_empty() {
            return Err(MetricsError::Invalid(format!("question {i} has no answer")));
        }
        let acc = question_accuracy(&q.prediction, &q.answers, variant);
        accs.push(acc);
        if let Some(t) = &q.question_type {
            by_q.entry(t.clone()).or_default().push(acc);
        }
        if let Some(t) = &q.answer_type {
            by_a.entry(t.clone()).or_default().push(acc);
        }
    }
    let finish = |v: f64| match variant {
        VqaVariant::Official => py2_round2(v),
        VqaVariant::Mimic => v,
    };
    let mean100 = |v: &[f64]| 100.0 * v.iter().sum::<f64>() / v.len() as f64;
    Ok(VqaReport {
        overall: finish(mean100(&accs)),
        per_question_type: by_q
            .iter()
            .map(|(k, v)| (k.clone(), finish(mean100(v))))
            .collect(),
        per_answer_type: by_a
            .iter()
            .map(|(k, v)| (k.clone(), finish(mean100(v))))
            .collect(),
        per_question: accs.iter().map(|&a| finish(100.0 * a)).collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn punctuation_rules() {
        // No "p " / " p": replaced by a space.
        assert_eq!(process_punctuation("black/white"), "black white");
        // " /" occurs: deleted.
        assert_eq!(process_punctuation("x / y"), "x  y");
        // Digit-comma-digit anywhere: every punct deleted.
        assert_eq!(process_punctuation("1,000 a-b"), "1000 ab");
        assert_eq!(process_punctuation("t-shirt"), "t shirt");
        // Periods not followed by a digit go; "3.5" keeps its period.
        assert_eq!(process_punctuation("3.5 a.m."), "3.5 am");
        assert_eq!(process_punctuation("1.5."), "1.5");
        // ':' and '\'' are not punctuation here.
        assert_eq!(process_punctuation("10:00 don't"), "10:00 don't");
        // Only 32 periods are removed.
        let s = format!("{}x", ".".repeat(40));
        assert_eq!(process_punctuation(&s), format!("{}x", ".".repeat(8)));
    }

    #[test]
    fn digit_article_rules() {
        assert_eq!(process_digit_article("The Two  dogs"), "2 dogs");
        assert_eq!(process_digit_article("an apple"), "apple");
        assert_eq!(process_digit_article("dont know"), "don't know");
        assert_eq!(process_digit_article("Im here"), "im here");
        assert_eq!(process_digit_article("somebody'd"), "somebodyd");
        assert_eq!(process_digit_article("none"), "0");
        assert_eq!(CONTRACTIONS.len(), 120);
    }

    #[test]
    fn unanimity_rule() {
        let yes = vec!["yes"; 10];
        assert_eq!(question_accuracy("yes", &yes, VqaVariant::Official), 1.0);
        assert_eq!(question_accuracy("Yes", &yes, VqaVariant::Official), 0.0);
        assert_eq!(question_accuracy("Yes", &yes, VqaVariant::Mimic), 1.0);
        let mut nine = vec!["yes"; 9];
        nine.push("no");
        assert_eq!(question_accuracy("Yes", &nine, VqaVariant::Official), 1.0);
    }

    #[test]
    fn leave_one_out() {
        // 2 of 10 say "no": acc_i = 1/3 for the 8 "yes" annotators left out (2 others match),
        // 1/3 for each "no" left out (1 other: 1/3): (8 * 2/3 + 2 * 1/3) / 10 = 0.6.
        let mut a = vec!["yes"; 8];
        a.extend(["no"; 2]);
        let acc = question_accuracy("no", &a, VqaVariant::Official);
        assert!((acc - 0.6).abs() < 1e-15, "{acc}");
        // 3 matches: (7 * 1 + 3 * 2/3) / 10 = 0.9.
        let mut b = vec!["yes"; 7];
        b.extend(["no"; 3]);
        assert!((question_accuracy("no", &b, VqaVariant::Official) - 0.9).abs() < 1e-15);
    }

    #[test]
    fn python2_round() {
        assert_eq!(py2_round2(84.583333), 84.58);
        assert_eq!(py2_round2(12.125), 12.13); // exact tie: away from zero (Python 3: 12.12)
        assert_eq!(py2_round2(2.675), 2.67); // 2.67499999... in binary
        assert_eq!(py2_round2(99.995), 100.0); // 99.99500000000000454...
        assert_eq!(py2_round2(1.005), 1.0); // 1.00499999999999989...
        assert_eq!(py2_round2(99.999), 100.0);
        assert_eq!(py2_round2(0.0), 0.0);
        assert_eq!(py2_round2(100.0), 100.0);
    }
}
