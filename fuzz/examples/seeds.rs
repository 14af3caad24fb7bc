//! Writes the seed inputs of each fuzz target (src/seeds.rs) into
//! `corpus/<target>/`, or under the directory given as the first argument.
//!
//!     cargo run --example seeds [-- DIR]

use std::path::Path;

fn main() {
    let dir = std::env::args().nth(1).unwrap_or_else(|| "corpus".into());
    for (target, name, input) in iotbox_fuzz::seeds::all() {
        let dir = Path::new(&dir).join(target);
        std::fs::create_dir_all(&dir).expect("corpus directory");
        std::fs::write(dir.join(name), input).expect("seed written");
    }
    println!("seeds written under {dir}");
}
