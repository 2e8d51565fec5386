//! The public gRPC schema `smista.v1` keeps its promises: the three services with their RPCs, every
//! enum starting at `*_UNSPECIFIED = 0`, and documentation on every service, method, message,
//! field, enum and enum value.

use prost::Message;
use prost_types::{FileDescriptorSet, SourceCodeInfo};

fn set() -> FileDescriptorSet {
    FileDescriptorSet::decode(smista_proto::FILE_DESCRIPTOR_SET).expect("descriptor set decodes")
}

fn smista_files(set: &FileDescriptorSet) -> Vec<&prost_types::FileDescriptorProto> {
    set.file.iter().filter(|f| f.package() == "smista.v1").collect()
}

#[test]
fn services_expose_the_v1_api() {
    let set = set();
    let mut methods = Vec::new();
    for f in smista_files(&set) {
        for s in &f.service {
            for m in &s.method {
                methods.push(format!("{}/{}", s.name(), m.name()));
            }
        }
    }
    for want in [
        "ContactService/OfferContact",
        "ContactService/CancelContact",
        "ContactService/StreamEvents",
        "OperatorService/Login",
        "OperatorService/Logout",
        "OperatorService/SetState",
        "OperatorService/WatchOffers",
        "OperatorService/AcceptOffer",
        "OperatorService/DeclineOffer",
        "OperatorService/CompleteContact",
        "AdminService/GetSnapshot",
        "AdminService/SetQueueOpen",
        "AdminService/UpdateQueue",
        "AdminService/UpdateBudget",
        "AdminService/ListBudgetAudit",
    ] {
        assert!(methods.iter().any(|m| m == want), "missing {want}; have {methods:?}");
    }
}

#[test]
fn every_enum_starts_with_unspecified_zero() {
    let set = set();
    for f in smista_files(&set) {
        for e in &f.enum_type {
            let first = &e.value[0];
            assert_eq!(first.number(), 0, "{}", e.name());
            assert!(first.name().ends_with("_UNSPECIFIED"), "{} starts with {}", e.name(), first.name());
        }
    }
}

/// Paths (per descriptor.proto) of every element that must carry a leading comment.
fn documented(info: &SourceCodeInfo, path: &[i32]) -> bool {
    info.location.iter().any(|l| {
        l.path == path && (!l.leading_comments().trim().is_empty() || !l.trailing_comments().trim().is_empty())
    })
}

#[test]
fn every_element_is_documented() {
    let set = set();
    let mut missing = Vec::new();
    for f in smista_files(&set) {
        let info = f.source_code_info.as_ref().expect("descriptor set carries source info");
        // FileDescriptorProto: message_type = 4, enum_type = 5, service = 6.
        for (i, m) in f.message_type.iter().enumerate() {
            let p = vec![4, i as i32];
            // Request/response wrappers named after their RPC are documented by the RPC itself.
            let wrapper = m.name().ends_with("Request") || m.name().ends_with("Response");
            if !wrapper && !documented(info, &p) {
                missing.push(format!("{}: message {}", f.name(), m.name()));
            }
            // DescriptorProto: field = 2.
            for (j, fld) in m.field.iter().enumerate() {
                let mut fp = p.clone();
                fp.extend([2, j as i32]);
                if !documented(info, &fp) {
                    missing.push(format!("{}: field {}.{}", f.name(), m.name(), fld.name()));
                }
            }
        }
        for (i, e) in f.enum_type.iter().enumerate() {
            let p = vec![5, i as i32];
            if !documented(info, &p) {
                missing.push(format!("{}: enum {}", f.name(), e.name()));
            }
            for (j, v) in e.value.iter().enumerate() {
                if v.number() == 0 {
                    continue;
                }
                if !documented(info, &[5, i as i32, 2, j as i32]) {
                    missing.push(format!("{}: value {}", f.name(), v.name()));
                }
            }
        }
        for (i, s) in f.service.iter().enumerate() {
            if !documented(info, &[6, i as i32]) {
                missing.push(format!("{}: service {}", f.name(), s.name()));
            }
            for (j, m) in s.method.iter().enumerate() {
                if !documented(info, &[6, i as i32, 2, j as i32]) {
                    missing.push(format!("{}: rpc {}.{}", f.name(), s.name(), m.name()));
                }
            }
        }
    }
    assert!(missing.is_empty(), "undocumented schema elements:\n{}", missing.join("\n"));
}
