//! Attributes: the untyped [`Attr`] values of the text form and ONNX, and the typed attribute
//! structs of each op, declared once with [`attrs!`](crate::attrs).
//!
//! One conversion serves the ONNX importer, the text parser, the printer and the exporter:
//! an attribute struct is built from an [`Attrs`] bag with [`OpAttrs::from_attrs`] and written
//! back with [`OpAttrs::to_attrs`], which omits values equal to their defaults.

use crate::{DType, Graph, Tensor};

/// An untyped attribute value.
#[derive(Clone, Debug, PartialEq)]
pub enum Attr {
    /// Integer.
    Int(i64),
    /// Float.
    Float(f32),
    /// String.
    String(String),
    /// Tensor.
    Tensor(Tensor),
    /// Subgraph.
    Graph(Box<Graph>),
    /// Integer list.
    Ints(Vec<i64>),
    /// Float list.
    Floats(Vec<f32>),
    /// String list.
    Strings(Vec<String>),
}

impl Attr {
    /// Short kind name for messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Attr::Int(_) => "int",
            Attr::Float(_) => "float",
            Attr::String(_) => "string",
            Attr::Tensor(_) => "tensor",
            Attr::Graph(_) => "graph",
            Attr::Ints(_) => "ints",
            Attr::Floats(_) => "floats",
            Attr::Strings(_) => "strings",
        }
    }
}

/// Why attributes could not be turned into an op.
#[derive(Debug, thiserror::Error, Clone, PartialEq)]
pub enum AttrError {
    /// A required attribute is absent.
    #[error("missing required attribute '{0}'")]
    Missing(&'static str),
    /// An attribute has the wrong kind or an invalid value.
    #[error("attribute '{name}': {msg}")]
    Invalid {
        /// Attribute name.
        name: String,
        /// What is wrong.
        msg: String,
    },
    /// An attribute the op does not define.
    #[error("unknown attribute '{name}' (valid: {valid})")]
    Unknown {
        /// Attribute name.
        name: String,
        /// Valid names, comma-separated.
        valid: String,
    },
}

/// A bag of named attributes, consumed while building a typed attribute struct.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Attrs(pub Vec<(String, Attr)>);

impl Attrs {
    /// Removes and converts `name`; falls back to `default`, then to the type's notion of
    /// "absent" (`None` for `Option`), else reports it missing.
    pub fn take<T: AttrValue>(
        &mut self,
        name: &'static str,
        default: Option<T>,
    ) -> Result<T, AttrError> {
        match self.0.iter().position(|(n, _)| n == name) {
            Some(i) => {
                let (_, a) = self.0.remove(i);
                T::from_attr(a).map_err(|msg| AttrError::Invalid {
                    name: name.into(),
                    msg,
                })
            }
            None => default.or_else(T::absent).ok_or(AttrError::Missing(name)),
        }
    }

    /// Fails if any attribute was not consumed.
    pub fn finish(self, valid: &[&str]) -> Result<(), AttrError> {
        match self.0.into_iter().next() {
            None => Ok(()),
            Some((name, _)) => Err(AttrError::Unknown {
                name,
                valid: if valid.is_empty() {
                    "none".into()
                } else {
                    valid.join(", ")
                },
            }),
        }
    }

    /// Looks an attribute up without consuming it.
    pub fn get(&self, name: &str) -> Option<&Attr> {
        self.0.iter().find(|(n, _)| n == name).map(|(_, a)| a)
    }

    /// Removes an attribute, if present.
    pub fn remove(&mut self, name: &str) -> Option<Attr> {
        let i = self.0.iter().position(|(n, _)| n == name)?;
        Some(self.0.remove(i).1)
    }
}

/// A Rust type an attribute converts to.
pub trait AttrValue: Sized + PartialEq {
    /// Converts, or says why not.
    fn from_attr(a: Attr) -> Result<Self, String>;
    /// Converts back; `None` means "omit".
    fn to_attr(&self) -> Option<Attr>;
    /// The value of an absent attribute with no default (`Some(None)` for `Option`).
    fn absent() -> Option<Self> {
        None
    }
}

fn wrong(expected: &str, a: &Attr) -> String {
    format!("expected {expected}, found {}", a.kind())
}

macro_rules! attr_value {
    ($t:ty, $variant:ident, $kind:literal) => {
        impl AttrValue for $t {
            fn from_attr(a: Attr) -> Result<Self, String> {
                match a {
                    Attr::$variant(v) => Ok(v),
                    other => Err(wrong($kind, &other)),
                }
            }
            fn to_attr(&self) -> Option<Attr> {
                Some(Attr::$variant(self.clone()))
            }
        }
    };
}
attr_value!(i64, Int, "int");
attr_value!(String, String, "string");
attr_value!(Tensor, Tensor, "tensor");
attr_value!(Vec<i64>, Ints, "ints");
attr_value!(Vec<String>, Strings, "strings");

impl AttrValue for f32 {
    fn from_attr(a: Attr) -> Result<Self, String> {
        match a {
            Attr::Float(v) => Ok(v),
            Attr::Int(v) => Ok(v as f32),
            other => Err(wrong("float", &other)),
        }
    }
    fn to_attr(&self) -> Option<Attr> {
        Some(Attr::Float(*self))
    }
}

impl AttrValue for Vec<f32> {
    fn from_attr(a: Attr) -> Result<Self, String> {
        match a {
            Attr::Floats(v) => Ok(v),
            Attr::Ints(v) => Ok(v.into_iter().map(|x| x as f32).collect()),
            other => Err(wrong("floats", &other)),
        }
    }
    fn to_attr(&self) -> Option<Attr> {
        Some(Attr::Floats(self.clone()))
    }
}

impl AttrValue for bool {
    fn from_attr(a: Attr) -> Result<Self, String> {
        match a {
            Attr::Int(0) => Ok(false),
            Attr::Int(1) => Ok(true),
            Attr::Int(v) => Err(format!("expected 0 or 1, found {v}")),
            other => Err(wrong("int (0 or 1)", &other)),
        }
    }
    fn to_attr(&self) -> Option<Attr> {
        Some(Attr::Int(*self as i64))
    }
}

impl AttrValue for DType {
    fn from_attr(a: Attr) -> Result<Self, String> {
        match a {
            Attr::Int(v) => {
                crate::onnx_dtype(v as i32).ok_or_else(|| format!("unknown ONNX data type {v}"))
            }
            Attr::String(s) => DType::from_name(&s).ok_or_else(|| format!("unknown dtype '{s}'")),
            other => Err(wrong("data type", &other)),
        }
    }
    fn to_attr(&self) -> Option<Attr> {
        Some(Attr::Int(crate::dtype_onnx_code(*self) as i64))
    }
}

impl AttrValue for Graph {
    fn from_attr(a: Attr) -> Result<Self, String> {
        match a {
            Attr::Graph(g) => Ok(*g),
            other => Err(wrong("graph", &other)),
        }
    }
    fn to_attr(&self) -> Option<Attr> {
        Some(Attr::Graph(Box::new(self.clone())))
    }
}

impl<T: AttrValue> AttrValue for Option<T> {
    fn from_attr(a: Attr) -> Result<Self, String> {
        T::from_attr(a).map(Some)
    }
    fn to_attr(&self) -> Option<Attr> {
        self.as_ref().and_then(T::to_attr)
    }
    fn absent() -> Option<Self> {
        Some(None)
    }
}

/// A typed attribute struct of an op.
pub trait OpAttrs: Sized {
    /// Attribute names, as in ONNX.
    const NAMES: &'static [&'static str];
    /// Builds from a bag, consuming the known names; the caller checks leftovers.
    fn from_attrs(a: &mut Attrs) -> Result<Self, AttrError>;
    /// Writes non-default attributes.
    fn to_attrs(&self, out: &mut Vec<(String, Attr)>);
    /// Subgraphs held by the attributes (If branches, Loop/Scan bodies).
    fn subgraphs(&self) -> Vec<&Graph> {
        Vec::new()
    }
    /// Mutable access to the subgraphs.
    fn subgraphs_mut(&mut self) -> Vec<&mut Graph> {
        Vec::new()
    }
}

/// Declares a typed attribute struct: `Name { field: Type = default, other("onnxName"): Type }`.
/// Fields without a default are required unless their type is an `Option`.
#[macro_export]
macro_rules! attrs {
    ($(#[$m:meta])* $name:ident {
        $( $(#[$fm:meta])* $f:ident $(($on:literal))? : $t:ty $(= $d:expr)? ),* $(,)?
    }) => {
        $(#[$m])*
        #[derive(Clone, Debug, PartialEq)]
        pub struct $name { $( $(#[$fm])*
            #[doc = concat!("Attribute `", $crate::attrs!(@name $f $($on)?), "`.")]
            pub $f: $t, )* }

        impl $crate::attr::OpAttrs for $name {
            const NAMES: &'static [&'static str] = &[ $( $crate::attrs!(@name $f $($on)?) ),* ];
            fn from_attrs(a: &mut $crate::attr::Attrs) -> Result<Self, $crate::attr::AttrError> {
                Ok($name { $( $f: a.take::<$t>(
                    $crate::attrs!(@name $f $($on)?), $crate::attrs!(@default $($d)?))?, )* })
            }
            #[allow(unused_variables)]
            fn to_attrs(&self, out: &mut Vec<(String, $crate::attr::Attr)>) {
                $(
                    let default: Option<$t> = $crate::attrs!(@default $($d)?);
                    if default.as_ref() != Some(&self.$f) {
                        if let Some(v) = $crate::attr::AttrValue::to_attr(&self.$f) {
                            out.push(($crate::attrs!(@name $f $($on)?).to_string(), v));
                        }
                    }
                )*
            }
        }

        impl Default for $name {
            /// Every attribute at its ONNX default (required ones at their type's default).
            fn default() -> Self {
                $name { $( $f: $crate::attrs!(@default $($d)?).unwrap_or_default(), )* }
            }
        }
    };
    (@name $f:ident) => { stringify!($f) };
    (@name $f:ident $on:literal) => { $on };
    (@default) => { None };
    (@default $d:expr) => { Some(Into::into($d)) };
}
