//! A keyword's value as the boundary hands it to the parser: plain Rust data, already
//! taken out of the Python object (`py::config`).

#[derive(Clone, Debug, PartialEq)]
pub enum RawValue {
    Bool(bool),
    Int(i64),
    /// An integer beyond `i64`, as its decimal text.
    BigInt(String),
    Float(f64),
    Str(String),
    List(Vec<RawValue>),
    /// A dict's entries, keys converted like values.
    Map(Vec<(RawValue, RawValue)>),
    /// The JSON of any object, for `Kind::Json` settings.
    Json(serde_json::Value),
    /// A callable (for `Kind::Callable`; the Python layer keeps the object itself).
    Callable,
    /// Anything else: the name of its type, for the error message.
    Other(String),
}

impl RawValue {
    /// What the value is, in an error message.
    pub fn describe(&self) -> String {
        match self {
            RawValue::Bool(_) => "bool".into(),
            RawValue::Int(_) | RawValue::BigInt(_) => "int".into(),
            RawValue::Float(_) => "float".into(),
            RawValue::Str(_) => "str".into(),
            RawValue::List(_) => "list".into(),
            RawValue::Map(_) => "dict".into(),
            RawValue::Json(_) => "value".into(),
            RawValue::Callable => "callable".into(),
            RawValue::Other(t) => t.clone(),
        }
    }
}
