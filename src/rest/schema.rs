//! The protos' messages, enums and comments at run time, read from the encoded
//! descriptor set: what the transcoder needs to bind path, query and header
//! values to typed fields, and what the OpenAPI document describes.

use std::collections::HashMap;

use anyhow::Context;
use prost::Message;
use prost_types::{
    DescriptorProto, FileDescriptorSet, SourceCodeInfo,
    field_descriptor_proto::{Label, Type},
};

/// The JSON-relevant type of a field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// `bool`.
    Bool,
    /// 32-bit integers (a JSON number).
    Int32,
    /// 64-bit integers (a JSON string in proto3 JSON).
    Int64,
    /// `float` / `double`.
    Float,
    /// `string`.
    String,
    /// `bytes` (base64).
    Bytes,
    /// An enum, by full name (without the leading dot).
    Enum(String),
    /// A message, by full name (without the leading dot).
    Message(String),
}

/// One field of a message.
#[derive(Debug, Clone)]
pub struct Field {
    /// Proto field name, e.g. `unit_price`.
    pub name: String,
    /// lowerCamelCase JSON name, e.g. `unitPrice`.
    pub json_name: String,
    /// The field's proto type (of each element when `repeated`).
    pub kind: Kind,
    /// `repeated` (a JSON array).
    pub repeated: bool,
    /// A map field: key and value kinds (a JSON object).
    pub map: Option<(Kind, Kind)>,
    /// Member of this real oneof, if any.
    pub oneof: Option<String>,
    /// Annotated `[(google.api.field_behavior) = REQUIRED]`: requests without it are refused.
    pub required: bool,
    /// The proto's leading comment: the field's OpenAPI description.
    pub comment: String,
}

include!(concat!(env!("OUT_DIR"), "/required_fields.rs"));

/// A proto message as the REST shim needs it: to check a JSON body and to
/// describe it in the OpenAPI document.
#[derive(Debug, Clone)]
pub struct MessageInfo {
    /// Full name, e.g. `commerce.v1.Cart`.
    pub full_name: String,
    /// Fields in declaration order.
    pub fields: Vec<Field>,
    /// The proto's leading comment: the schema's OpenAPI description.
    pub comment: String,
}

impl MessageInfo {
    /// The field called `name` in proto or JSON spelling.
    pub fn field(&self, name: &str) -> Option<&Field> {
        self.fields.iter().find(|f| f.name == name || f.json_name == name)
    }
}

/// A proto enum: the names a JSON body may use for it, and its OpenAPI description.
#[derive(Debug, Clone)]
pub struct EnumInfo {
    /// Value names in declaration order.
    pub values: Vec<String>,
    /// The proto's leading comment: the schema's OpenAPI description.
    pub comment: String,
}

/// Every message, enum and rpc comment of the descriptor set.
#[derive(Debug, Default)]
pub struct Schema {
    messages: HashMap<String, MessageInfo>,
    enums: HashMap<String, EnumInfo>,
    /// `package.Service/Method` and `package.Service` -> leading comment.
    comments: HashMap<String, String>,
}

impl Schema {
    /// Decodes an encoded `FileDescriptorSet` (with source info for comments).
    pub fn decode(bytes: &[u8]) -> anyhow::Result<Self> {
        let set = FileDescriptorSet::decode(bytes).context("decoding the file descriptor set")?;
        let mut schema = Self::default();
        for file in &set.file {
            let package = file.package();
            let comments = Comments(file.source_code_info.as_ref());
            for (i, message) in file.message_type.iter().enumerate() {
                schema.add_message(package, message, &comments, vec![4, i as i32]);
            }
            for (i, e) in file.enum_type.iter().enumerate() {
                let name = format!("{package}.{}", e.name());
                schema.add_enum(name, e, comments.get(&[5, i as i32]));
            }
            for (i, service) in file.service.iter().enumerate() {
                let name = format!("{package}.{}", service.name());
                schema.comments.insert(name.clone(), comments.get(&[6, i as i32]));
                for (j, method) in service.method.iter().enumerate() {
                    let text = comments.get(&[6, i as i32, 2, j as i32]);
                    schema.comments.insert(format!("{name}/{}", method.name()), text);
                }
            }
        }
        Ok(schema)
    }

    /// The message called `full_name` (no leading dot).
    pub fn message(&self, full_name: &str) -> Option<&MessageInfo> {
        self.messages.get(full_name)
    }

    /// The enum called `full_name` (no leading dot).
    pub fn enumeration(&self, full_name: &str) -> Option<&EnumInfo> {
        self.enums.get(full_name)
    }

    /// Leading comment of a service (`pkg.Service`) or rpc (`pkg.Service/Method`).
    pub fn comment(&self, key: &str) -> &str {
        self.comments.get(key).map_or("", String::as_str)
    }

    fn add_message(&mut self, scope: &str, message: &DescriptorProto, comments: &Comments, path: Vec<i32>) {
        let full_name = format!("{scope}.{}", message.name());
        for (i, nested) in message.nested_type.iter().enumerate() {
            let mut nested_path = path.clone();
            nested_path.extend([3, i as i32]);
            self.add_message(&full_name, nested, comments, nested_path);
        }
        for (i, e) in message.enum_type.iter().enumerate() {
            let mut enum_path = path.clone();
            enum_path.extend([4, i as i32]);
            self.add_enum(format!("{full_name}.{}", e.name()), e, comments.get(&enum_path));
        }
        let fields = message
            .field
            .iter()
            .enumerate()
            .map(|(i, f)| {
                let mut field_path = path.clone();
                field_path.extend([2, i as i32]);
                // proto3 `optional` is a synthetic oneof: not a real choice.
                let oneof = f
                    .oneof_index
                    .filter(|_| !f.proto3_optional())
                    .and_then(|i| message.oneof_decl.get(i as usize))
                    .map(|o| o.name().to_string());
                // A map field is a repeated synthetic `XEntry` (key = 1, value = 2).
                let map = message
                    .nested_type
                    .iter()
                    .find(|n| {
                        n.options.as_ref().is_some_and(|o| o.map_entry())
                            && f.type_name() == format!(".{full_name}.{}", n.name())
                    })
                    .and_then(|entry| match entry.field.as_slice() {
                        [k, v] => Some((kind(k.r#type(), k.type_name()), kind(v.r#type(), v.type_name()))),
                        _ => None,
                    });
                let required = REQUIRED_FIELDS.contains(&(full_name.as_str(), f.name()));
                Field {
                    required,
                    name: f.name().to_string(),
                    json_name: f.json_name.clone().unwrap_or_else(|| lower_camel(f.name())),
                    kind: kind(f.r#type(), f.type_name()),
                    repeated: f.label() == Label::Repeated && map.is_none(),
                    map,
                    oneof,
                    comment: comments.get(&field_path),
                }
            })
            .collect();
        let comment = comments.get(&path);
        self.messages.insert(
            full_name.clone(),
            MessageInfo {
                full_name,
                fields,
                comment,
            },
        );
    }

    fn add_enum(&mut self, full_name: String, e: &prost_types::EnumDescriptorProto, comment: String) {
        let values = e.value.iter().map(|v| v.name().to_string()).collect();
        self.enums.insert(full_name, EnumInfo { values, comment });
    }
}

fn kind(ty: Type, type_name: &str) -> Kind {
    let name = type_name.trim_start_matches('.').to_string();
    match ty {
        Type::Bool => Kind::Bool,
        Type::Int32 | Type::Sint32 | Type::Sfixed32 | Type::Uint32 | Type::Fixed32 => Kind::Int32,
        Type::Int64 | Type::Sint64 | Type::Sfixed64 | Type::Uint64 | Type::Fixed64 => Kind::Int64,
        Type::Float | Type::Double => Kind::Float,
        Type::String => Kind::String,
        Type::Bytes => Kind::Bytes,
        Type::Enum => Kind::Enum(name),
        Type::Message | Type::Group => Kind::Message(name),
    }
}

/// `unit_price` -> `unitPrice`, the proto3 JSON name when the descriptor has none.
fn lower_camel(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut upper = false;
    for c in name.chars() {
        if c == '_' {
            upper = true;
        } else if upper {
            out.push(c.to_ascii_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}

/// Leading comments by source path.
struct Comments<'a>(Option<&'a SourceCodeInfo>);

impl Comments<'_> {
    fn get(&self, path: &[i32]) -> String {
        self.0
            .and_then(|info| info.location.iter().find(|l| l.path == path))
            .map(|l| {
                l.leading_comments()
                    .lines()
                    .map(str::trim)
                    .collect::<Vec<_>>()
                    .join("\n")
                    .trim()
                    .to_string()
            })
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_fields_comments_and_rpc_docs_from_the_embedded_descriptors() {
        let schema = Schema::decode(crate::proto::FILE_DESCRIPTOR_SET).unwrap();
        let add = schema.message("commerce.v1.AddItemRequest").unwrap();
        let price = add.field("unitPrice").unwrap();
        assert_eq!(price.name, "unit_price");
        assert_eq!(price.kind, Kind::String);
        assert!(price.comment.contains("29.99"), "{}", price.comment);
        assert_eq!(add.field("expected_version").unwrap().kind, Kind::Int64);
        assert!(add.field("expected_version").unwrap().oneof.is_none());
        let cart = schema.message("commerce.v1.Cart").unwrap();
        assert_eq!(
            cart.field("status").unwrap().kind,
            Kind::Enum("commerce.v1.CartStatus".into())
        );
        assert!(cart.field("items").unwrap().repeated);
        let entry = schema.message("commerce.v1.OrderHistoryEntry").unwrap();
        assert_eq!(entry.field("event").unwrap().oneof.as_deref(), Some("entry"));
        let status = schema.enumeration("commerce.v1.OrderStatus").unwrap();
        assert!(status.values.contains(&"ORDER_STATUS_CONFIRMED".to_string()));
        assert!(
            schema
                .comment("commerce.v1.CartService/AddItem")
                .contains("same product")
        );
        assert!(add.field("product_id").unwrap().required);
        assert!(!add.field("expected_version").unwrap().required);
        let structure = schema.message("google.protobuf.Struct").unwrap();
        assert!(structure.field("fields").unwrap().map.is_some());
    }
}
