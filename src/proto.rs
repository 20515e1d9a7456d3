//! Generated protobuf, gRPC and proto3-JSON code, one module per proto package.
#![allow(clippy::all, clippy::pedantic, missing_docs)]

/// `commerce.v1`: carts, orders, sagas, admin; `commerce.events.v1`: the public
/// order-event feed for sibling services.
pub mod commerce {
    pub mod v1 {
        tonic::include_proto!("commerce.v1");
        include!(concat!(env!("OUT_DIR"), "/commerce.v1.serde.rs"));
    }
    pub mod events {
        pub mod v1 {
            tonic::include_proto!("commerce.events.v1");
            include!(concat!(env!("OUT_DIR"), "/commerce.events.v1.serde.rs"));
        }
    }
}

/// `payment.v1`: the payment sibling.
pub mod payment {
    pub mod v1 {
        tonic::include_proto!("payment.v1");
        include!(concat!(env!("OUT_DIR"), "/payment.v1.serde.rs"));
    }
}

/// `inventory.v1`: the inventory sibling.
pub mod inventory {
    pub mod v1 {
        tonic::include_proto!("inventory.v1");
        include!(concat!(env!("OUT_DIR"), "/inventory.v1.serde.rs"));
    }
}

/// `shipping.v1`: the shipping sibling.
pub mod shipping {
    pub mod v1 {
        tonic::include_proto!("shipping.v1");
        include!(concat!(env!("OUT_DIR"), "/shipping.v1.serde.rs"));
    }
}

/// Encoded `FileDescriptorSet` of every proto above, imports included
/// (google.api.http options kept): feeds reflection and the REST shim.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/descriptor.bin"));

mod timestamp;
pub use timestamp::Timestamp;

/// A `google.protobuf.Timestamp` for a UTC time.
pub fn timestamp(at: chrono::DateTime<chrono::Utc>) -> Timestamp {
    at.into()
}
