//! ONNX export of the inference network (SPEC 1 without dropout), built as protobuf messages of
//! the official schema (`proto/onnx.proto3`, compiled by build.rs) and encoded by prost.

use crate::model::{CLASSES, KERNEL, PARAM_NAMES, Params, SIDE, param_shapes};
use crate::{Error, Result};
use prost::Message;
use std::collections::BTreeMap;

/// The ONNX messages generated from the vendored schema.
#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod proto {
    include!(concat!(env!("OUT_DIR"), "/onnx.rs"));
}

use proto::tensor_shape_proto::{Dimension, dimension};
use proto::{
    AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, StringStringEntryProto,
    TensorProto, TensorShapeProto, TypeProto, ValueInfoProto, attribute_proto, tensor_proto,
    type_proto,
};

/// Default-domain opset: 17 has every op used here in its current form and is read by every
/// maintained runtime.
pub const OPSET: i64 = 17;
/// IR version 8 is the one that goes with opset 17 (ONNX 1.12).
pub const IR_VERSION: i64 = 8;
/// Graph input: f32 `[N,1,28,28]`, pixel values / 255.
pub const INPUT: &str = "image";
/// Graph outputs: `[N,10]` each.
pub const LOGITS: &str = "logits";
pub const PROBABILITIES: &str = "probabilities";
/// The dynamic batch dimension's name.
pub const BATCH_DIM: &str = "N";

/// The exported model as an ONNX `ModelProto`; every metadata entry becomes a `metadata_props`
/// entry. Params whose tensors do not have the shapes of `param_shapes(hidden)` are a BadArg.
pub fn model_proto(params: &Params, metadata: &BTreeMap<String, String>) -> Result<ModelProto> {
    let shapes = param_shapes(params.hidden);
    if params.hidden == 0 || params.tensors.len() != shapes.len() {
        return Err(Error::BadArg(format!(
            "cannot export: expected {} parameter tensors with hidden >= 1, got {} with hidden {}",
            shapes.len(),
            params.tensors.len(),
            params.hidden
        )));
    }
    let mut initializer = Vec::with_capacity(shapes.len());
    for ((name, shape), t) in PARAM_NAMES.iter().zip(&shapes).zip(&params.tensors) {
        let want: usize = shape.iter().product();
        if t.len() != want {
            return Err(Error::BadArg(format!(
                "cannot export: {name} has {} values, its shape {shape:?} needs {want}",
                t.len()
            )));
        }
        initializer.push(TensorProto {
            name: name.to_string(),
            dims: shape.iter().map(|&d| d as i64).collect(),
            data_type: tensor_proto::DataType::Float as i32,
            // raw_data is little-endian by the schema, whatever the host.
            raw_data: t.iter().flat_map(|v| v.to_le_bytes()).collect(),
            ..Default::default()
        });
    }

    let k = KERNEL as i64;
    let conv = |n: &str, input: &str| {
        node(
            "Conv",
            n,
            &[input, &format!("{n}.weight"), &format!("{n}.bias")],
            vec![
                ints("kernel_shape", &[k, k]),
                ints("strides", &[1, 1]),
                ints("pads", &[0, 0, 0, 0]),
            ],
        )
    };
    let pool = |n: &str, input: &str| {
        node(
            "MaxPool",
            n,
            &[input],
            vec![ints("kernel_shape", &[2, 2]), ints("strides", &[2, 2])],
        )
    };
    let gemm = |n: &str, input: &str, out: &str| {
        let mut g = node(
            "Gemm",
            n,
            &[input, &format!("{n}.weight"), &format!("{n}.bias")],
            vec![int("transB", 1)],
        );
        g.output = vec![out.to_string()];
        g
    };
    let relu = |n: &str, input: &str| node("Relu", n, &[input], vec![]);
    let nodes = vec![
        conv("conv1", INPUT),
        relu("conv1.relu", "conv1"),
        pool("pool1", "conv1.relu"),
        conv("conv2", "pool1"),
        relu("conv2.relu", "conv2"),
        pool("pool2", "conv2.relu"),
        // C,H,W order, as SPEC 1's flatten: [N,64,4,4] -> [N,1024].
        node("Flatten", "flatten", &["pool2"], vec![int("axis", 1)]),
        gemm("fc1", "flatten", "fc1"),
        relu("fc1.relu", "fc1"),
        gemm("fc2", "fc1.relu", LOGITS),
        {
            let mut s = node("Softmax", "softmax", &[LOGITS], vec![int("axis", 1)]);
            s.output = vec![PROBABILITIES.to_string()];
            s
        },
    ];

    let side = SIDE as i64;
    let graph = GraphProto {
        name: "fmnist-gpu".into(),
        node: nodes,
        initializer,
        input: vec![value_info(INPUT, &[1, side, side])],
        output: vec![
            value_info(LOGITS, &[CLASSES as i64]),
            value_info(PROBABILITIES, &[CLASSES as i64]),
        ],
        doc_string: format!("SPEC 1's CNN, hidden = {}, dropout removed", params.hidden),
        ..Default::default()
    };
    Ok(ModelProto {
        ir_version: IR_VERSION,
        opset_import: vec![OperatorSetIdProto {
            domain: String::new(),
            version: OPSET,
        }],
        producer_name: "fmnist-gpu".into(),
        producer_version: env!("CARGO_PKG_VERSION").into(),
        doc_string: doc_string(params.hidden),
        graph: Some(graph),
        metadata_props: metadata
            .iter()
            .map(|(key, value)| StringStringEntryProto {
                key: key.clone(),
                value: value.clone(),
            })
            .collect(),
        ..Default::default()
    })
}

/// [`model_proto`] encoded as the bytes of a `.onnx` file.
pub fn model_bytes(params: &Params, metadata: &BTreeMap<String, String>) -> Result<Vec<u8>> {
    Ok(model_proto(params, metadata)?.encode_to_vec())
}

/// What the file is and how to feed it, for someone who finds it without this program.
fn doc_string(hidden: usize) -> String {
    let classes: Vec<String> = crate::data::CLASSES
        .iter()
        .enumerate()
        .map(|(i, c)| format!("{i} {c}"))
        .collect();
    format!(
        "fmnist-gpu Fashion-MNIST classifier (conv5x5x64-relu-maxpool2, conv5x5x64-relu-maxpool2, \
         fc {hidden}-relu, fc 10), inference only. Input `{INPUT}`: f32 [{BATCH_DIM},1,28,28], \
         grey pixels / 255 in [0,1], light garment on black, no other normalisation. Outputs \
         `{LOGITS}` [{BATCH_DIM},10] and `{PROBABILITIES}` [{BATCH_DIM},10] (softmax). Classes: {}. \
         metadata_props hold the training run's configuration.",
        classes.join(", ")
    )
}

/// A node named `name` whose single output is also called `name`.
fn node(op: &str, name: &str, inputs: &[&str], attribute: Vec<AttributeProto>) -> NodeProto {
    NodeProto {
        op_type: op.into(),
        name: name.into(),
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: vec![name.into()],
        attribute,
        ..Default::default()
    }
}

fn ints(name: &str, v: &[i64]) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: attribute_proto::AttributeType::Ints as i32,
        ints: v.to_vec(),
        ..Default::default()
    }
}

fn int(name: &str, v: i64) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: attribute_proto::AttributeType::Int as i32,
        i: v,
        ..Default::default()
    }
}

/// An f32 tensor `[N, rest...]` with the batch dimension symbolic.
fn value_info(name: &str, rest: &[i64]) -> ValueInfoProto {
    let mut dim = vec![Dimension {
        value: Some(dimension::Value::DimParam(BATCH_DIM.into())),
        denotation: String::new(),
    }];
    dim.extend(rest.iter().map(|&d| Dimension {
        value: Some(dimension::Value::DimValue(d)),
        denotation: String::new(),
    }));
    ValueInfoProto {
        name: name.into(),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: tensor_proto::DataType::Float as i32,
                shape: Some(TensorShapeProto { dim }),
            })),
            denotation: String::new(),
        }),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn malformed_params_are_bad_arg_not_a_panic() {
        let mut p = Params::zeros(8);
        p.tensors[4].pop();
        let e = model_bytes(&p, &BTreeMap::new()).unwrap_err();
        assert_eq!(e.exit_code(), 2);
        assert!(e.to_string().contains("fc1.weight"), "{e}");
        let e = model_bytes(&Params::zeros(0), &BTreeMap::new()).unwrap_err();
        assert_eq!(e.exit_code(), 2);
    }
}
