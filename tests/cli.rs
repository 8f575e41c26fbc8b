//! The command line as a user meets it: exit statuses, JSON on stdout, no colour codes when
//! the output is no terminal, completions, the built-in task sets.
mod common;

use common::{fails, mimic, succeeds};

#[test]
fn verify_outside_its_tolerance_exits_with_its_own_status() {
    // A tolerance of zero: the compiled model cannot be bit-identical to libtorch.
    let out = mimic(&[
        "verify",
        "--prompts",
        "1",
        "--steps",
        "1",
        "--attention",
        "unfused",
        "--tolerance",
        "0",
        "--threads",
        "2",
        "--json",
        "-",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("verification failed"), "{stderr}");
    // `--json -`: the JSON alone on stdout, the table on stderr.
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)));
    assert_eq!(v["passed"], false);
    assert_eq!(v["rows"][0]["prompts"], 1);
    assert!(stderr.contains("| attention"), "{stderr}");
}

#[test]
fn errors_and_usage_errors_have_their_own_statuses() {
    let missing = mimic(&["compile", "--model", "/no/such/model", "--out", "/tmp/x"]);
    assert_eq!(missing.status.code(), Some(1));
    let usage = mimic(&["compile", "--attention", "sideways", "--out", "/tmp/x"]);
    assert_eq!(usage.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&usage.stderr);
    assert!(
        stderr.contains("fused") && stderr.contains("kernel"),
        "{stderr}"
    );
}

#[test]
fn no_colour_codes_when_the_output_is_no_terminal() {
    // -v logs through tracing (loading the model logs); both streams are pipes here.
    let out = mimic(&[
        "-v",
        "generate",
        "--prompt",
        "Hello",
        "--max-new-tokens",
        "1",
        "--threads",
        "2",
    ]);
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && log.contains("model loaded"),
        "{log}"
    );
    for (name, bytes) in [("stdout", &out.stdout), ("stderr", &out.stderr)] {
        assert!(
            !bytes.contains(&0x1b),
            "ANSI escape in {name}: {}",
            String::from_utf8_lossy(bytes)
        );
    }
    let help = mimic(&["train", "--help"]);
    assert!(!help.stdout.contains(&0x1b));
    let text = String::from_utf8_lossy(&help.stdout);
    // Options with fixed values list them.
    assert!(
        text.contains("mimic-convex") && text.contains("per-query"),
        "{text}"
    );
}

#[test]
fn completions_for_each_shell() {
    for shell in ["bash", "zsh", "fish"] {
        let script = succeeds(&["completions", shell]);
        assert!(
            script.contains("mimic") && script.contains("verify"),
            "{shell}: {script}"
        );
    }
    fails(&["completions", "powershell-7"]);
}

#[test]
fn doctor_reports_the_task_data_and_the_default_model() {
    let v: serde_json::Value = serde_json::from_str(&succeeds(&["doctor", "--json", "-"])).unwrap();
    assert_eq!(v["tasks"]["built_in"]["country-capital"], 197);
    assert_eq!(v["tasks"]["built_in"]["antonym"], 2398);
    assert_eq!(v["default_model"]["architecture"], "llama");
    assert!(v["libtorch"].get("version").is_some(), "{v}");
}

#[test]
fn an_unknown_task_name_lists_the_built_in_ones() {
    let err = fails(&["train", "--task", "capitals-of-mars", "--steps", "1"]);
    assert!(
        err.contains("capitals-of-mars") && err.contains("singular-plural"),
        "{err}"
    );
}
