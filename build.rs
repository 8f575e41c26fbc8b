// The `mimic` binary and the workspace tests carry an rpath to the libtorch that torch-sys
// linked, so they run without LD_LIBRARY_PATH.
fn main() {
    if let Ok(lib) = std::env::var("DEP_TCH_LIBTORCH_LIB") {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{lib}");
        println!("cargo:rustc-env=MIMIC_LIBTORCH_LIB={lib}");
    }
}
