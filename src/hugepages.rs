//! Transparent huge pages for the process's large allocations.
//!
//! ONNX Runtime copies every weight matrix into a buffer of its own (MLAS's packed layout) and
//! libtorch allocates its tensors with `malloc`; neither asks the kernel for huge pages, so on a
//! kernel whose transparent huge pages are in `madvise` mode (a common default) the weights sit
//! on 4 KiB pages. glibc's `glibc.malloc.hugetlb=1` tunable makes `malloc` advise huge pages on
//! its large mappings, but glibc reads tunables only at start-up; so `mimic` starts itself over
//! once with the tunable set. `MIMIC_HUGEPAGES=0` turns this off.

/// The glibc tunable that makes `malloc` advise huge pages on its large mappings.
const TUNABLE: &str = "glibc.malloc.hugetlb";

/// The kernel's transparent-huge-page mode (`always`, `madvise` or `never`), if it has one.
fn kernel_mode() -> Option<String> {
    let modes = std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled").ok()?;
    let start = modes.find('[')? + 1;
    let end = modes[start..].find(']')? + start;
    Some(modes[start..end].to_string())
}

#[cfg(target_os = "linux")]
pub fn reexec_with_huge_pages() {
    use std::os::unix::process::CommandExt;

    if std::env::var_os("MIMIC_HUGEPAGES").is_some_and(|v| v == "0") {
        return;
    }
    let current = std::env::var("GLIBC_TUNABLES").unwrap_or_default();
    if current.contains(TUNABLE) {
        return;
    }
    // In `always` mode large mappings get huge pages anyway; in `never` nothing does.
    if kernel_mode().as_deref() != Some("madvise") {
        return;
    }
    let Ok(exe) = std::env::current_exe() else {
        return;
    };
    let value = match current.is_empty() {
        true => format!("{TUNABLE}=1"),
        false => format!("{current}:{TUNABLE}=1"),
    };
    let mut args = std::env::args_os();
    let arg0 = args.next().unwrap_or_else(|| exe.clone().into_os_string());
    // `exec` returns only if it failed; then this process goes on as it is.
    let err = std::process::Command::new(&exe)
        .arg0(arg0)
        .args(args)
        .env("GLIBC_TUNABLES", value)
        .exec();
    eprintln!(
        "warning: could not restart {} with huge pages: {err}",
        exe.display()
    );
}

#[cfg(not(target_os = "linux"))]
pub fn reexec_with_huge_pages() {}

/// What `mimic doctor` reports: the kernel's mode and whether `malloc` advises huge pages.
pub fn status() -> serde_json::Value {
    let on = format!("{TUNABLE}=1");
    let advised = std::env::var("GLIBC_TUNABLES").is_ok_and(|t| t.contains(&on));
    serde_json::json!({"kernel_mode": kernel_mode(), "malloc_advises": advised})
}
