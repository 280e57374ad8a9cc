//! A small builder over the ONNX protobuf messages.
//!
//! Exporters describe a graph in terms of float tensors, initialisers and
//! nodes; this module turns that into a `ModelProto`. Fields are written in a
//! fixed order by `protobuf`, so equal graphs serialise to equal bytes (the
//! artifact hashes depend on it).

use onnx_protobuf::attribute_proto::AttributeType;
use onnx_protobuf::tensor_proto::DataType;
use onnx_protobuf::tensor_shape_proto::{dimension, Dimension};
use onnx_protobuf::{
    type_proto, AttributeProto, GraphProto, Message, ModelProto, NodeProto, OperatorSetIdProto, TensorProto,
    TensorShapeProto, TypeProto, ValueInfoProto,
};

/// ONNX IR version written (ONNX 1.10+, supported by ONNX Runtime 1.31).
const IR_VERSION: i64 = 8;
/// Default-domain opset written.
pub const OPSET: i64 = 15;
/// `ai.onnx.ml` opset written (TreeEnsembleClassifier/Regressor v3).
pub const ML_OPSET: i64 = 3;

/// One dimension of a tensor shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dim {
    /// A fixed size.
    Fixed(i64),
    /// A symbolic size such as the batch `N`.
    Named(&'static str),
}

/// An attribute value on a node.
#[derive(Debug, Clone, PartialEq)]
pub enum Attr {
    /// One int.
    Int(i64),
    /// One float.
    Float(f32),
    /// Ints.
    Ints(Vec<i64>),
    /// Floats.
    Floats(Vec<f32>),
    /// One string.
    Str(String),
    /// Strings.
    Strs(Vec<String>),
}

/// A graph under construction.
#[derive(Debug, Default)]
pub struct GraphBuilder {
    graph: GraphProto,
    uses_ml: bool,
}

impl GraphBuilder {
    /// An empty graph called `name`.
    pub fn new(name: &str) -> Self {
        let graph = GraphProto {
            name: name.to_owned(),
            ..GraphProto::default()
        };
        Self {
            graph,
            uses_ml: false,
        }
    }

    /// Declares a float input.
    pub fn input(&mut self, name: &str, dims: &[Dim]) -> &mut Self {
        self.graph.input.push(float_value_info(name, dims));
        self
    }

    /// Declares a float output.
    pub fn output(&mut self, name: &str, dims: &[Dim]) -> &mut Self {
        self.graph.output.push(float_value_info(name, dims));
        self
    }

    /// Adds a constant float tensor.
    pub fn initializer(&mut self, name: &str, dims: &[i64], values: &[f32]) -> &mut Self {
        let t = TensorProto {
            name: name.to_owned(),
            dims: dims.to_vec(),
            data_type: DataType::FLOAT as i32,
            float_data: values.to_vec(),
            ..TensorProto::default()
        };
        self.graph.initializer.push(t);
        self
    }

    /// Adds a constant int64 tensor (shapes, axes).
    pub fn initializer_i64(&mut self, name: &str, dims: &[i64], values: &[i64]) -> &mut Self {
        let t = TensorProto {
            name: name.to_owned(),
            dims: dims.to_vec(),
            data_type: DataType::INT64 as i32,
            int64_data: values.to_vec(),
            ..TensorProto::default()
        };
        self.graph.initializer.push(t);
        self
    }

    /// Adds a default-domain node.
    pub fn node(&mut self, op: &str, inputs: &[&str], outputs: &[&str], attrs: &[(&str, Attr)]) -> &mut Self {
        self.push_node("", op, inputs, outputs, attrs)
    }

    /// Adds an `ai.onnx.ml` node.
    pub fn ml_node(
        &mut self,
        op: &str,
        inputs: &[&str],
        outputs: &[&str],
        attrs: &[(&str, Attr)],
    ) -> &mut Self {
        self.uses_ml = true;
        self.push_node("ai.onnx.ml", op, inputs, outputs, attrs)
    }

    fn push_node(
        &mut self,
        domain: &str,
        op: &str,
        inputs: &[&str],
        outputs: &[&str],
        attrs: &[(&str, Attr)],
    ) -> &mut Self {
        let node = NodeProto {
            name: format!("{op}_{}", self.graph.node.len()),
            op_type: op.to_owned(),
            domain: domain.to_owned(),
            input: inputs.iter().map(|s| (*s).to_owned()).collect(),
            output: outputs.iter().map(|s| (*s).to_owned()).collect(),
            attribute: attrs.iter().map(|(n, a)| attribute(n, a)).collect(),
            ..NodeProto::default()
        };
        self.graph.node.push(node);
        self
    }

    /// Finishes the model and serialises it.
    pub fn build(&self, producer: &str, doc: &str) -> Result<Vec<u8>, protobuf::Error> {
        let mut opsets = vec![OperatorSetIdProto {
            domain: String::new(),
            version: OPSET,
            ..Default::default()
        }];
        if self.uses_ml {
            opsets.push(OperatorSetIdProto {
                domain: "ai.onnx.ml".into(),
                version: ML_OPSET,
                ..Default::default()
            });
        }
        let model = ModelProto {
            ir_version: IR_VERSION,
            opset_import: opsets,
            producer_name: producer.to_owned(),
            producer_version: env!("CARGO_PKG_VERSION").to_owned(),
            doc_string: doc.to_owned(),
            graph: protobuf::MessageField::some(self.graph.clone()),
            ..ModelProto::default()
        };
        model.write_to_bytes()
    }
}

fn float_value_info(name: &str, dims: &[Dim]) -> ValueInfoProto {
    let shape = TensorShapeProto {
        dim: dims
            .iter()
            .map(|d| Dimension {
                value: Some(match d {
                    Dim::Fixed(n) => dimension::Value::DimValue(*n),
                    Dim::Named(s) => dimension::Value::DimParam((*s).to_owned()),
                }),
                ..Dimension::default()
            })
            .collect(),
        ..TensorShapeProto::default()
    };
    let tensor = type_proto::Tensor {
        elem_type: DataType::FLOAT as i32,
        shape: protobuf::MessageField::some(shape),
        ..type_proto::Tensor::default()
    };
    let mut tp = TypeProto::default();
    tp.set_tensor_type(tensor);
    ValueInfoProto {
        name: name.to_owned(),
        type_: protobuf::MessageField::some(tp),
        ..ValueInfoProto::default()
    }
}

fn attribute(name: &str, a: &Attr) -> AttributeProto {
    let mut p = AttributeProto {
        name: name.to_owned(),
        ..AttributeProto::default()
    };
    let ty = match a {
        Attr::Int(v) => {
            p.i = *v;
            AttributeType::INT
        }
        Attr::Float(v) => {
            p.f = *v;
            AttributeType::FLOAT
        }
        Attr::Ints(v) => {
            p.ints = v.clone();
            AttributeType::INTS
        }
        Attr::Floats(v) => {
            p.floats = v.clone();
            AttributeType::FLOATS
        }
        Attr::Str(v) => {
            p.s = v.as_bytes().to_vec();
            AttributeType::STRING
        }
        Attr::Strs(v) => {
            p.strings = v.iter().map(|s| s.as_bytes().to_vec()).collect();
            AttributeType::STRINGS
        }
    };
    p.type_ = protobuf::EnumOrUnknown::new(ty);
    p
}

/// A logistic-regression head: `prob = sigmoid(X · w + b)`, input `x`
/// `[N, F]`, output `prob` `[N, 1]`. The smallest real model; also what the
/// exporter emits for linear heads.
pub fn logistic_regression(name: &str, weights: &[f32], bias: f32) -> Result<Vec<u8>, protobuf::Error> {
    let f = i64::try_from(weights.len()).unwrap_or(i64::MAX);
    let mut g = GraphBuilder::new(name);
    g.input("x", &[Dim::Named("N"), Dim::Fixed(f)])
        .output("prob", &[Dim::Named("N"), Dim::Fixed(1)])
        .initializer("w", &[f, 1], weights)
        .initializer("b", &[1], &[bias])
        .node("MatMul", &["x", "w"], &["xw"], &[])
        .node("Add", &["xw", "b"], &["logit"], &[])
        .node("Sigmoid", &["logit"], &["prob"], &[]);
    g.build("mlcore-models", name)
}
