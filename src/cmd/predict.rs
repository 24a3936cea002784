//! `fmnist-gpu predict`: classifies image files of any common format and size with a model file,
//! after converting them to what the network saw in training (28x28 grey, light garment on black).

use crate::checkpoint::load_model;
use crate::data::CLASSES;
use crate::gpu::DeviceKind;
use crate::limits;
use crate::model::CLASSES as N_CLASSES;
use crate::net::{NetConfig, NetData};
use crate::{Error, Result};
use image::imageops::FilterType;
use serde::Serialize;
use std::path::{Path, PathBuf};

const SIDE: u32 = crate::data::SIDE as u32;

#[derive(clap::Args, Clone, Debug)]
pub struct PredictArgs {
    /// A model checkpoint (safetensors with PyTorch names), e.g. a run's model.safetensors.
    #[arg(value_parser = super::utf8_path, long)]
    pub model: PathBuf,
    /// PNG, JPEG, GIF, BMP or WebP files of any size; colour is converted to grey.
    #[arg(value_parser = super::utf8_path, required = true, value_name = "IMAGE")]
    pub images: Vec<PathBuf>,
    /// Invert grey levels first: for dark garments on a light background, such as photos
    /// (Fashion-MNIST garments are light on black).
    #[arg(long)]
    pub invert: bool,
    /// How many classes to list per image, most probable first.
    #[arg(long, default_value_t = 3)]
    pub top: usize,
    /// Device as for train; `auto` means the CPU here (a few images do not pay for starting a
    /// GPU), `--device gpu` or `--adapter` runs on a GPU.
    #[command(flatten)]
    pub device: super::DeviceArgs,
    /// Print one JSON document on stdout.
    #[arg(long)]
    pub json: bool,
}

/// Reads an image file and converts it to the network's input: grey levels, transparent areas
/// as background, `invert` applied, resized so its longer side is 28 (aspect ratio kept, area
/// averaging when shrinking), centred on a black 28x28 canvas. Row-major, 0..=255.
pub fn load_image(path: &Path, invert: bool) -> Result<Vec<u8>> {
    let bytes = crate::input::read_regular(path, limits::MAX_IMAGE_FILE_BYTES, "an image file")?;
    load_image_bytes(path, &bytes, invert)
}

/// The decoder's limits: no side beyond [`limits::MAX_IMAGE_SIDE`], no allocation beyond
/// [`limits::MAX_DECODE_BYTES`].
fn decode_limits() -> image::Limits {
    let mut l = image::Limits::default();
    l.max_image_width = Some(limits::MAX_IMAGE_SIDE);
    l.max_image_height = Some(limits::MAX_IMAGE_SIDE);
    l.max_alloc = Some(limits::MAX_DECODE_BYTES);
    l
}

/// [`load_image`] of the file's bytes (`path` names it in errors). Images of more than
/// [`limits::MAX_IMAGE_PIXELS`] are refused before decoding; the grey conversion keeps at most
/// the decoded image and one 2-byte-per-pixel copy alive at once.
pub fn load_image_bytes(path: &Path, bytes: &[u8], invert: bool) -> Result<Vec<u8>> {
    let reader = || -> Result<image::ImageReader<std::io::Cursor<&[u8]>>> {
        let mut r = image::ImageReader::new(std::io::Cursor::new(bytes))
            .with_guessed_format()
            .map_err(|e| Error::bad_file(path, format!("cannot read: {e}")))?;
        r.limits(decode_limits());
        Ok(r)
    };
    let unreadable = |e: image::ImageError| {
        Error::bad_file(
            path,
            format!("not an image this program can read (PNG, JPEG, GIF, BMP, WebP): {e}"),
        )
    };
    let r = reader()?;
    if r.format() == Some(image::ImageFormat::Jpeg) && !jpeg_complete(bytes) {
        // The JPEG decoder fills a cut-off scan with grey and reports success.
        return Err(Error::bad_file(
            path,
            "truncated JPEG: the file ends before its end-of-image marker",
        ));
    }
    let (w, h) = r.into_dimensions().map_err(unreadable)?;
    if w == 0 || h == 0 {
        return Err(Error::bad_file(path, "image has no pixels"));
    }
    let pixels = w as u64 * h as u64;
    if pixels > limits::MAX_IMAGE_PIXELS {
        return Err(Error::bad_file(
            path,
            format!(
                "image is {w}x{h} ({pixels} pixels), more than the {} pixels predict decodes; \
                 shrink it first (the network sees 28x28)",
                limits::MAX_IMAGE_PIXELS
            ),
        ));
    }
    let img = reader()?.decode().map_err(unreadable)?;
    let (w, h) = (img.width(), img.height());
    if w == 0 || h == 0 {
        return Err(Error::bad_file(path, "image has no pixels"));
    }
    // Composite over the background colour of the photo's own convention, so transparency ends
    // up black after the optional inversion.
    let grey = if img.color().has_alpha() {
        let la = img.to_luma_alpha8();
        drop(img);
        let bg = if invert { 255.0 } else { 0.0 };
        image::GrayImage::from_fn(w, h, |x, y| {
            let [l, a] = la.get_pixel(x, y).0;
            let a = a as f32 / 255.0;
            let v = l as f32 * a + bg * (1.0 - a);
            let v = if invert { 255.0 - v } else { v };
            image::Luma([v.round().clamp(0.0, 255.0) as u8])
        })
    } else {
        // Opaque: the same grey levels without the alpha copy (in place when already 8-bit grey).
        let mut g = img.into_luma8();
        if invert {
            for p in g.iter_mut() {
                *p = 255 - *p;
            }
        }
        g
    };
    let scale = SIDE as f64 / w.max(h) as f64;
    let nw = ((w as f64 * scale).round() as u32).clamp(1, SIDE);
    let nh = ((h as f64 * scale).round() as u32).clamp(1, SIDE);
    let small = image::imageops::resize(&grey, nw, nh, FilterType::Triangle);
    let mut canvas = image::GrayImage::new(SIDE, SIDE);
    image::imageops::replace(
        &mut canvas,
        &small,
        ((SIDE - nw) / 2) as i64,
        ((SIDE - nh) / 2) as i64,
    );
    Ok(canvas.into_raw())
}

/// True when JPEG `bytes` end with the end-of-image marker (FF D9), ignoring zero padding that
/// some writers append after it.
fn jpeg_complete(bytes: &[u8]) -> bool {
    let end = bytes.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
    bytes[..end].ends_with(&[0xff, 0xd9])
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Ranked {
    pub class: usize,
    pub name: String,
    pub probability: f64,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Prediction {
    pub file: PathBuf,
    pub top: Vec<Ranked>,
}

/// The `top` classes of each 28x28 grey image (as [`load_image_bytes`] makes them), `batch`
/// images per forward pass of `net` (a net built for that batch, without dropout).
pub fn classify(
    net: &mut dyn crate::net::Net,
    pixels: &[Vec<u8>],
    batch: u32,
    top: usize,
) -> Result<Vec<Vec<Ranked>>> {
    let px = (SIDE * SIDE) as usize;
    let mut out = Vec::new();
    for chunk in pixels.chunks(batch as usize) {
        let mut x = vec![0.0f32; batch as usize * px];
        for (dst, src) in x.chunks_mut(px).zip(chunk) {
            for (d, &s) in dst.iter_mut().zip(src) {
                *d = s as f32 / 255.0;
            }
        }
        let probe = net.probe(&x, &vec![0u32; batch as usize])?;
        let logits = probe
            .tensors
            .iter()
            .find(|(n, _)| n == "logits")
            .map(|(_, v)| v)
            .ok_or_else(|| Error::Runtime("the net returned no logits".into()))?;
        for row in logits.chunks(N_CLASSES).take(chunk.len()) {
            out.push(rank(row, top));
        }
    }
    Ok(out)
}

/// Softmax of one row of logits (in f64), classes by falling probability (ties: lower class).
fn rank(logits: &[f32], top: usize) -> Vec<Ranked> {
    let max = logits
        .iter()
        .fold(f64::NEG_INFINITY, |m, &v| m.max(v as f64));
    let e: Vec<f64> = logits.iter().map(|&v| (v as f64 - max).exp()).collect();
    let sum: f64 = e.iter().sum();
    let mut r: Vec<Ranked> = e
        .iter()
        .enumerate()
        .map(|(c, v)| Ranked {
            class: c,
            name: CLASSES[c].to_string(),
            probability: v / sum,
        })
        .collect();
    r.sort_by(|a, b| {
        b.probability
            .total_cmp(&a.probability)
            .then(a.class.cmp(&b.class))
    });
    r.truncate(top);
    r
}

pub fn run(args: &PredictArgs) -> Result<()> {
    if args.top == 0 || args.top > N_CLASSES {
        return Err(Error::BadArg(format!(
            "--top must be between 1 and {N_CLASSES}, got {}",
            args.top
        )));
    }
    let (params, _) = load_model(&args.model)?;
    let pixels: Vec<Vec<u8>> = args
        .images
        .iter()
        .map(|p| load_image(p, args.invert))
        .collect::<Result<_>>()?;
    let batch = pixels.len().min(64) as u32;
    let cfg = NetConfig::inference(batch, params.hidden as u32);
    let mut device = args.device.clone();
    if device.device == DeviceKind::Auto && device.adapter.is_none() {
        device.device = DeviceKind::Cpu;
    }
    let mut net = super::open_net(&device, cfg, NetData::empty(), params)?;
    let out = classify(net.as_mut(), &pixels, batch, args.top)?;
    let preds: Vec<Prediction> = args
        .images
        .iter()
        .zip(out)
        .map(|(f, top)| Prediction {
            file: f.clone(),
            top,
        })
        .collect();
    if args.json {
        let v = serde_json::json!({
            "model": args.model,
            "device": net.device(),
            "adapter": net.adapter(),
            "invert": args.invert,
            "predictions": preds,
        });
        println!("{}", serde_json::to_string_pretty(&v).expect("plain data"));
    } else {
        for p in &preds {
            let top: Vec<String> = p
                .top
                .iter()
                .map(|r| format!("{} {:.4}", r.name, r.probability))
                .collect();
            println!("{}: {}", p.file.display(), top.join(", "));
        }
    }
    Ok(())
}
