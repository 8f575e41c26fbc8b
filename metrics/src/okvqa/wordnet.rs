//! `WordNetLemmatizer().lemmatize(word, "v")` (nltk 3.10.4): WordNet's morphy for verbs over
//! WordNet 3.0, reduced to what verbs need: the verb lemmas of `index.verb`
//! (data/okvqa-stemmer/verb-lemmas.txt) and the verb exception list `verb.exc`.
//!
//! ```text
//! forms   = verb.exc[word]                  if word is an exception (last line wins)
//!           else [word[:-len(old)] + new for each (old, new) in the rules if word ends in old]
//! rules   = s->"", ies->y, es->e, es->"", ed->e, ed->"", ing->e, ing->""
//! lemmas  = [word] + forms, kept if a verb lemma, first occurrences only
//! result  = the first shortest (in characters) lemma, or word when there is none
//! ```
//!
//! Nothing is lower-cased (`Running` stays as it is); lemmas are as the index spells them
//! (lower case, `_` for spaces).

use std::collections::{HashMap, HashSet};
use std::sync::OnceLock;

/// The verb substitution rules of morphy, tried in this order.
const VERB_RULES: &[(&str, &str)] = &[
    ("s", ""),
    ("ies", "y"),
    ("es", "e"),
    ("es", ""),
    ("ed", "e"),
    ("ed", ""),
    ("ing", "e"),
    ("ing", ""),
];

struct VerbIndex {
    lemmas: HashSet<&'static str>,
    exceptions: HashMap<&'static str, Vec<&'static str>>,
}

fn index() -> &'static VerbIndex {
    static INDEX: OnceLock<VerbIndex> = OnceLock::new();
    INDEX.get_or_init(|| {
        let lemmas = include_str!("../../../data/okvqa-stemmer/verb-lemmas.txt")
            .lines()
            .collect();
        let mut exceptions = HashMap::new();
        for line in include_str!("../../../data/okvqa-stemmer/verb.exc").lines() {
            let mut terms = crate::py_split(line);
            if let Some(inflected) = terms.next() {
                exceptions.insert(inflected, terms.collect());
            }
        }
        VerbIndex { lemmas, exceptions }
    })
}

/// nltk's `_morphy(word, "v")`: every verb lemma `word` may be a form of, in order.
pub fn morphy_verb(word: &str) -> Vec<String> {
    let idx = index();
    let forms: Vec<String> = match idx.exceptions.get(word) {
        Some(bases) => bases.iter().map(|s| s.to_string()).collect(),
        None => VERB_RULES
            .iter()
            .filter_map(|(old, new)| word.strip_suffix(old).map(|stem| format!("{stem}{new}")))
            .collect(),
    };
    let mut out: Vec<String> = Vec::new();
    for form in std::iter::once(word.to_string()).chain(forms) {
        if idx.lemmas.contains(form.as_str()) && !out.contains(&form) {
            out.push(form);
        }
    }
    out
}

/// `WordNetLemmatizer().lemmatize(word, "v")`.
pub fn lemmatize_verb(word: &str) -> String {
    let mut best: Option<String> = None;
    for lemma in morphy_verb(word) {
        // Python's min(key=len) keeps the first of equal lengths.
        if best
            .as_ref()
            .is_none_or(|b| lemma.chars().count() < b.chars().count())
        {
            best = Some(lemma);
        }
    }
    best.unwrap_or_else(|| word.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verbs() {
        assert_eq!(lemmatize_verb("running"), "run");
        assert_eq!(lemmatize_verb("lying"), "lie");
        assert_eq!(lemmatize_verb("dying"), "die");
        assert_eq!(lemmatize_verb("went"), "go");
        assert_eq!(lemmatize_verb("skiing"), "ski");
        assert_eq!(lemmatize_verb("making"), "make");
        assert_eq!(lemmatize_verb("Running"), "Running");
        assert_eq!(lemmatize_verb("ceiling"), "ceiling");
        assert_eq!(lemmatize_verb("ing"), "ing");
    }
}
