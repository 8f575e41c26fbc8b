//! `inflection.singularize(word)` (inflection 0.5.1, MIT; a port of Rails' inflector rules).
//!
//! ```text
//! if word ends in an uncountable (a whole word, case-insensitive): word
//! else the first rule whose pattern matches rewrites the match; no match: word
//! ```
//!
//! The rule list is data: the irregular pairs (newest first, as the library inserts them at
//! the front) and then the regular endings, most specific first, ending with `s$ -> ""`.
//! An irregular pair whose two forms share their first letter keeps that letter's case
//! (`(p)eople$ -> \1erson`); `cow`/`kine` does not, so it has one rule per case of `k`.

use std::sync::OnceLock;

use regex::Regex;

/// Words that have no separate plural.
const UNCOUNTABLES: &[&str] = &[
    "equipment",
    "fish",
    "information",
    "jeans",
    "money",
    "rice",
    "series",
    "sheep",
    "species",
];

/// `(pattern, replacement)` in the order they are tried (Python `re` syntax with `\1` groups
/// written `${1}`).
const SINGULAR_RULES: &[(&str, &str)] = &[
    // Irregulars: zombie, cow (kine), move, sex, child, human, man, person.
    (r"(?i)(z)ombies$", "${1}ombie"),
    (r"k[iI][nN][eE]$", "cow"),
    (r"K[iI][nN][eE]$", "Cow"),
    (r"(?i)(m)oves$", "${1}ove"),
    (r"(?i)(s)exes$", "${1}ex"),
    (r"(?i)(c)hildren$", "${1}hild"),
    (r"(?i)(h)umans$", "${1}uman"),
    (r"(?i)(m)en$", "${1}an"),
    (r"(?i)(p)eople$", "${1}erson"),
    // Regular endings.
    (r"(?i)(database)s$", "${1}"),
    (r"(?i)(quiz)zes$", "${1}"),
    (r"(?i)(matr)ices$", "${1}ix"),
    (r"(?i)(vert|ind)ices$", "${1}ex"),
    (r"(?i)(passer)sby$", "${1}by"),
    (r"(?i)^(ox)en", "${1}"),
    (r"(?i)(alias|status)(es)?$", "${1}"),
    (r"(?i)(octop|vir)(us|i)$", "${1}us"),
    (r"(?i)^(a)x[ie]s$", "${1}xis"),
    (r"(?i)(cris|test)(is|es)$", "${1}is"),
    (r"(?i)(shoe)s$", "${1}"),
    (r"(?i)(o)es$", "${1}"),
    (r"(?i)(bus)(es)?$", "${1}"),
    (r"(?i)(m|l)ice$", "${1}ouse"),
    (r"(?i)(x|ch|ss|sh)es$", "${1}"),
    (r"(?i)(m)ovies$", "${1}ovie"),
    (r"(?i)(s)eries$", "${1}eries"),
    (r"(?i)([^aeiouy]|qu)ies$", "${1}y"),
    (r"(?i)([lr])ves$", "${1}f"),
    (r"(?i)(tive)s$", "${1}"),
    (r"(?i)(hive)s$", "${1}"),
    (r"(?i)([^f])ves$", "${1}fe"),
    (r"(?i)(t)he(sis|ses)$", "${1}hesis"),
    (r"(?i)(s)ynop(sis|ses)$", "${1}ynopsis"),
    (r"(?i)(p)rogno(sis|ses)$", "${1}rognosis"),
    (r"(?i)(p)arenthe(sis|ses)$", "${1}arenthesis"),
    (r"(?i)(d)iagno(sis|ses)$", "${1}iagnosis"),
    (r"(?i)(b)a(sis|ses)$", "${1}asis"),
    (r"(?i)(a)naly(sis|ses)$", "${1}nalysis"),
    (r"(?i)([ti])a$", "${1}um"),
    (r"(?i)(n)ews$", "${1}ews"),
    (r"(?i)(ss)$", "${1}"),
    (r"(?i)s$", ""),
];

struct Rules {
    uncountable: Vec<Regex>,
    singular: Vec<(Regex, &'static str)>,
}

fn rules() -> &'static Rules {
    static RULES: OnceLock<Rules> = OnceLock::new();
    RULES.get_or_init(|| Rules {
        uncountable: UNCOUNTABLES
            .iter()
            .map(|w| Regex::new(&format!(r"(?i)\b({w})\z")).expect("uncountable"))
            .collect(),
        singular: SINGULAR_RULES
            .iter()
            .map(|&(p, r)| (Regex::new(p).expect("singular rule"), r))
            .collect(),
    })
}

/// `inflection.singularize(word)`. Tokens hold no newline, so Python's `$` (end, or before
/// a final newline) is the end here.
pub fn singularize(word: &str) -> String {
    let r = rules();
    if r.uncountable.iter().any(|re| re.is_match(word)) {
        return word.to_string();
    }
    for (re, replacement) in &r.singular {
        if re.is_match(word) {
            return re.replace_all(word, *replacement).into_owned();
        }
    }
    word.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn singulars() {
        for (plural, singular) in [
            ("dogs", "dog"),
            ("posts", "post"),
            ("octopi", "octopus"),
            ("sheep", "sheep"),
            ("word", "word"),
            ("CamelOctopi", "CamelOctopus"),
            ("people", "person"),
            ("People", "Person"),
            ("kine", "cow"),
            ("Kine", "Cow"),
            ("children", "child"),
            ("men", "man"),
            ("women", "woman"),
            ("mice", "mouse"),
            ("geese", "geese"),
            ("wolves", "wolf"),
            ("knives", "knife"),
            ("berries", "berry"),
            ("analyses", "analysis"),
            ("buses", "bus"),
            ("glass", "glass"),
            ("news", "news"),
            ("matrices", "matrix"),
            ("oxen", "ox"),
            ("tomatoes", "tomato"),
            ("bluejeans", "bluejean"),
            ("blue-jeans", "blue-jeans"),
        ] {
            assert_eq!(singularize(plural), singular, "{plural}");
        }
    }
}
