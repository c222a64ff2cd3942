//! Rebuild the runtime when the UI bundle it embeds changes.

fn main() {
    println!("cargo:rerun-if-changed=../ui/dist");
}
