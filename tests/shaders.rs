//! Offline shader checks (SPEC 10), no GPU needed: every `shaders/*.wgsl` parses and validates
//! with naga, the op families exist, and each WGSL params struct has the size and the
//! field layout of its `#[repr(C)]` twin in `src/params.rs`.

use fmnist_gpu::params::{
    ActParams, ConvGradParams, ConvParams, DenseParams, GatherParams, HeadParams, LossParams,
    OptParams, PoolParams, ReduceParams, StatsPartial, StepState, UpdateRecord, WameParams,
};
use std::collections::BTreeMap;
use std::mem::size_of;
use std::path::{Path, PathBuf};

const FAMILIES: [&str; 9] = [
    "conv",
    "conv_grad",
    "pool",
    "dense",
    "head",
    "act",
    "loss",
    "optim",
    "data",
];

/// The structs shared between host and shaders, with their Rust sizes.
fn params_table() -> BTreeMap<&'static str, usize> {
    BTreeMap::from([
        ("ConvParams", size_of::<ConvParams>()),
        ("ConvGradParams", size_of::<ConvGradParams>()),
        ("PoolParams", size_of::<PoolParams>()),
        ("DenseParams", size_of::<DenseParams>()),
        ("HeadParams", size_of::<HeadParams>()),
        ("ActParams", size_of::<ActParams>()),
        ("LossParams", size_of::<LossParams>()),
        ("GatherParams", size_of::<GatherParams>()),
        ("WameParams", size_of::<WameParams>()),
        ("OptParams", size_of::<OptParams>()),
        ("StepState", size_of::<StepState>()),
        ("ReduceParams", size_of::<ReduceParams>()),
        ("UpdateRecord", size_of::<UpdateRecord>()),
        ("StatsPartial", size_of::<StatsPartial>()),
    ])
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// One named (non-padding) field: name, byte offset, scalar kind (`u32`, `i32`, `f32`), count.
type Field = (String, u32, &'static str, u32);

/// The named fields of `pub struct name` in `src/params.rs`, with `repr(C)` offsets. The structs
/// hold only 4-byte scalars and arrays of them (the module's rule), so offsets are running sums;
/// padding fields (`_...`) are skipped but counted. Returns the fields and the summed size.
fn rust_fields(src: &str, name: &str) -> Result<(Vec<Field>, u32), String> {
    let head = format!("pub struct {name} {{");
    let start = src
        .find(&head)
        .ok_or_else(|| format!("`{head}` not found in src/params.rs"))?
        + head.len();
    let body = &src[start..start + src[start..].find('}').ok_or("unclosed struct")?];
    let (mut fields, mut offset) = (Vec::new(), 0u32);
    for line in body.lines().map(str::trim) {
        let Some(decl) = line.strip_prefix("pub ") else {
            if line.is_empty() || line.starts_with("//") || line.starts_with("#[") {
                continue;
            }
            return Err(format!("{name}: cannot read field line `{line}`"));
        };
        let (field, ty) = decl
            .trim_end_matches(',')
            .split_once(':')
            .ok_or_else(|| format!("{name}: cannot read `{line}`"))?;
        let ty = ty.trim();
        let (scalar, count) =
            if let Some(arr) = ty.strip_prefix('[').and_then(|t| t.strip_suffix(']')) {
                let (s, n) = arr
                    .split_once(';')
                    .ok_or_else(|| format!("{name}: cannot read `{ty}`"))?;
                let n: u32 = n
                    .trim()
                    .parse()
                    .map_err(|_| format!("{name}: bad length in `{ty}`"))?;
                (s.trim(), n)
            } else {
                (ty, 1)
            };
        let scalar = match scalar {
            "u32" => "u32",
            "i32" => "i32",
            "f32" => "f32",
            other => {
                return Err(format!(
                    "{name}.{field}: type `{other}` is not a 4-byte scalar"
                ));
            }
        };
        if !field.starts_with('_') {
            fields.push((field.trim().to_string(), offset, scalar, count));
        }
        offset += 4 * count;
    }
    Ok((fields, offset))
}

fn scalar_name(s: naga::Scalar) -> &'static str {
    match (s.kind, s.width) {
        (naga::ScalarKind::Uint, 4) => "u32",
        (naga::ScalarKind::Sint, 4) => "i32",
        (naga::ScalarKind::Float, 4) => "f32",
        _ => "other",
    }
}

/// The named (non-`_`) members of a WGSL struct as [`Field`]s.
fn wgsl_fields(module: &naga::Module, members: &[naga::StructMember]) -> Vec<Field> {
    members
        .iter()
        .filter_map(|m| {
            let name = m.name.clone().unwrap_or_default();
            if name.starts_with('_') {
                return None;
            }
            let (scalar, count) = match &module.types[m.ty].inner {
                naga::TypeInner::Scalar(s) | naga::TypeInner::Atomic(s) => (scalar_name(*s), 1),
                naga::TypeInner::Array {
                    base,
                    size: naga::ArraySize::Constant(n),
                    ..
                } => match &module.types[*base].inner {
                    naga::TypeInner::Scalar(s) | naga::TypeInner::Atomic(s) => {
                        (scalar_name(*s), n.get())
                    }
                    _ => ("other", n.get()),
                },
                _ => ("other", 1),
            };
            Some((name, m.offset, scalar, count))
        })
        .collect()
}

fn wgsl_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "wgsl"))
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files
}

/// Parses and validates one shader, returning its module or naga's rendered diagnostics.
fn validate(path: &Path) -> Result<naga::Module, String> {
    let src = std::fs::read_to_string(path).map_err(|e| format!("cannot read: {e}"))?;
    let name = path.display().to_string();
    let module =
        naga::front::wgsl::parse_str(&src).map_err(|e| e.emit_to_string_with_path(&src, &name))?;
    naga::valid::Validator::new(
        naga::valid::ValidationFlags::all(),
        naga::valid::Capabilities::all(),
    )
    .validate(&module)
    .map_err(|e| e.emit_to_string_with_path(&src, &name))?;
    Ok(module)
}

/// Problems with the params structs declared in `module` (from `file`), and the table names seen.
fn check_structs(
    file: &str,
    module: &naga::Module,
    params_src: &str,
    table: &BTreeMap<&'static str, usize>,
    seen: &mut BTreeMap<&'static str, Vec<String>>,
) -> Vec<String> {
    let mut problems = Vec::new();
    for (_, ty) in module.types.iter() {
        let (Some(name), naga::TypeInner::Struct { members, span }) = (&ty.name, &ty.inner) else {
            continue;
        };
        let Some((&key, &rust_size)) = table.get_key_value(name.as_str()) else {
            if name.ends_with("Params") {
                problems.push(format!(
                    "{file}: struct {name} has no Rust twin in the params table of src/params.rs"
                ));
            }
            continue;
        };
        seen.entry(key).or_default().push(file.to_string());
        if *span as usize != rust_size {
            problems.push(format!(
                "{file}: struct {name} is {span} bytes in WGSL, {rust_size} in Rust"
            ));
        }
        match rust_fields(params_src, name) {
            Err(e) => problems.push(e),
            Ok((rust, summed)) => {
                if summed as usize != rust_size {
                    problems.push(format!(
                        "src/params.rs: {name} fields sum to {summed} bytes but size_of is {rust_size}"
                    ));
                }
                let wgsl = wgsl_fields(module, members);
                if wgsl != rust {
                    problems.push(format!(
                        "{file}: struct {name} fields (name, offset, type, count) differ from Rust:\n    \
                         WGSL {wgsl:?}\n    Rust {rust:?}"
                    ));
                }
            }
        }
    }
    problems
}

#[test]
fn shaders_validate_and_params_match() {
    let dir = root().join("shaders");
    let params_src = std::fs::read_to_string(root().join("src/params.rs")).unwrap();
    let table = params_table();
    let mut problems = Vec::new();
    for family in FAMILIES {
        if !dir.join(format!("{family}.wgsl")).is_file() {
            problems.push(format!("shaders/{family}.wgsl is missing"));
        }
    }
    let files = wgsl_files(&dir);
    let mut seen = BTreeMap::new();
    for path in &files {
        let file = format!(
            "shaders/{}",
            path.file_name().unwrap_or_default().to_string_lossy()
        );
        match validate(path) {
            Err(diag) => problems.push(format!("{file} does not validate:\n{diag}")),
            Ok(module) => {
                eprintln!("{file}: ok ({} entry points)", module.entry_points.len());
                problems.extend(check_structs(
                    &file,
                    &module,
                    &params_src,
                    &table,
                    &mut seen,
                ));
            }
        }
    }
    // Every shared struct must have a WGSL twin somewhere (a rename on one side shows up here).
    for name in table.keys() {
        if !seen.contains_key(name) {
            problems.push(format!("no shader declares struct {name}"));
        }
    }
    assert!(
        problems.is_empty(),
        "{} shader problem(s):\n{}",
        problems.len(),
        problems.join("\n")
    );
}

/// The layout reader itself, on the real `src/params.rs`: if it misread a field the comparison
/// above could pass or fail for the wrong reason.
#[test]
fn params_reader_matches_size_of() {
    let src = std::fs::read_to_string(root().join("src/params.rs")).unwrap();
    for (name, size) in params_table() {
        let (fields, summed) = rust_fields(&src, name).unwrap();
        assert_eq!(summed as usize, size, "{name}");
        assert!(!fields.is_empty(), "{name}");
        assert!(fields.iter().all(|f| !f.0.starts_with('_')), "{name}");
    }
    let (f, _) = rust_fields(&src, "ConvParams").unwrap();
    assert_eq!(f[0], ("batch".to_string(), 0, "u32", 1));
    assert_eq!(f[8], ("relu".to_string(), 32, "u32", 1));
    let (f, _) = rust_fields(&src, "ActParams").unwrap();
    assert_eq!(f[2], ("scale".to_string(), 8, "f32", 1));
}

/// The checker on inline WGSL: it must reject what the real test is there to catch.
#[test]
fn checker_catches_mismatches() {
    let params_src = std::fs::read_to_string(root().join("src/params.rs")).unwrap();
    let table = params_table();
    let check = |src: &str| -> Vec<String> {
        let module = naga::front::wgsl::parse_str(src)
            .unwrap_or_else(|e| panic!("{}", e.emit_to_string(src)));
        check_structs("inline", &module, &params_src, &table, &mut BTreeMap::new())
    };
    let good = "struct ActParams { n: u32, threshold: u32, scale: f32, seed: u32 }\n\
                struct LossParams { batch: u32, classes: u32, label_smoothing: f32, _p1: u32 }\n\
                struct StepState { epoch_step: atomic<u32>, t: u32, n: u32, batch: u32 }";
    assert_eq!(check(good), Vec::<String>::new());
    // Unknown *Params struct.
    let p = check("struct FooParams { a: u32 }");
    assert!(
        p.len() == 1 && p[0].contains("FooParams has no Rust twin"),
        "{p:?}"
    );
    // Size mismatch (missing padding).
    let p = check("struct LossParams { batch: u32, classes: u32 }");
    assert!(
        p.iter().any(|s| s.contains("8 bytes in WGSL, 16 in Rust")),
        "{p:?}"
    );
    // Same size, swapped fields.
    let p = check("struct ActParams { threshold: u32, n: u32, scale: f32, seed: u32 }");
    assert!(p.iter().any(|s| s.contains("differ from Rust")), "{p:?}");
    // Same size and names, wrong type.
    let p = check("struct ActParams { n: u32, threshold: u32, scale: u32, seed: u32 }");
    assert!(p.iter().any(|s| s.contains("differ from Rust")), "{p:?}");
    // Invalid WGSL is reported with naga's diagnostics.
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.wgsl");
    std::fs::write(
        &bad,
        "@compute @workgroup_size(1) fn main() { let x: u32 = -1.5; }",
    )
    .unwrap();
    let e = validate(&bad).unwrap_err();
    assert!(e.contains("bad.wgsl:1:"), "{e}");
    // Parses, but the validator rejects it (a runtime-sized array cannot be a uniform).
    std::fs::write(
        &bad,
        "@group(0) @binding(0) var<uniform> u: array<f32>;\n\
         @compute @workgroup_size(1) fn main() { _ = u[0]; }",
    )
    .unwrap();
    let src = std::fs::read_to_string(&bad).unwrap();
    assert!(naga::front::wgsl::parse_str(&src).is_ok());
    let e = validate(&bad).unwrap_err();
    assert!(e.contains("bad.wgsl"), "{e}");
}
