//! Writes the sample images in `assets/samples/`: the first test image of each class, as 28x28
//! grey PNGs named `<test index>-<class>.png` (the test `predict_samples` checks them against the
//! data set). Usage: `cargo run --release --example export_samples [DATA_DIR] [OUT_DIR]`.

use fmnist_gpu::data::{self, CLASSES};
use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let dir = data::locate(args.next().map(PathBuf::from).as_deref())?;
    let out = PathBuf::from(args.next().unwrap_or_else(|| "assets/samples".into()));
    std::fs::create_dir_all(&out)?;
    let set = data::load(&dir)?.test;
    for (class, name) in CLASSES.iter().enumerate() {
        let i = set
            .labels
            .iter()
            .position(|&l| l as usize == class)
            .ok_or("a class with no test image")?;
        let slug: String = name
            .to_lowercase()
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .collect();
        let path = out.join(format!("{i}-{slug}.png"));
        let img = image::GrayImage::from_raw(28, 28, set.image(i).to_vec()).ok_or("image size")?;
        img.save(&path)?;
        println!("{}", path.display());
    }
    Ok(())
}
