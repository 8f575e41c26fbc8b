//! `mimic` restarts itself once with glibc's huge-page tunable where the kernel's transparent
//! huge pages are in `madvise` mode, and not when `MIMIC_HUGEPAGES=0` or in any other mode.
use std::process::Command;

/// `mimic doctor --json -`'s `huge_pages` entry, run with `env` added.
fn huge_pages(env: &[(&str, &str)]) -> serde_json::Value {
    let out = Command::new(env!("CARGO_BIN_EXE_mimic"))
        .args(["doctor", "--json", "-"])
        .env_remove("GLIBC_TUNABLES")
        .env_remove("MIMIC_HUGEPAGES")
        .envs(env.iter().copied())
        .output()
        .expect("run mimic doctor");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "doctor's output is not JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    });
    report["huge_pages"].clone()
}

#[test]
fn mimic_advises_huge_pages_only_in_madvise_mode_and_unless_turned_off() {
    let mode = std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled")
        .ok()
        .and_then(|m| Some(m.split('[').nth(1)?.split(']').next()?.to_string()));
    let on = huge_pages(&[]);
    assert_eq!(on["kernel_mode"].as_str(), mode.as_deref(), "{on}");
    let expected = cfg!(target_os = "linux") && mode.as_deref() == Some("madvise");
    assert_eq!(on["malloc_advises"], expected, "{on}");
    let off = huge_pages(&[("MIMIC_HUGEPAGES", "0")]);
    assert_eq!(off["malloc_advises"], false, "{off}");
}
