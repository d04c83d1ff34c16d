//! What the SMP groups share: ops, group numbers, generic MCUmgr error codes, the shape of a
//! handler's answer, and reading fields of a request's CBOR map.

use ciborium::Value;

/// SMP ops.
pub const OP_READ: u8 = 0;
pub const OP_WRITE: u8 = 2;
/// Groups.
pub const GROUP_OS: u16 = 0;
pub const GROUP_SETTINGS: u16 = 3;
pub const GROUP_FS: u16 = 8;
/// `MGMT_ERR_*` codes.
pub const MGMT_ERR_EUNKNOWN: i64 = 1;
pub const MGMT_ERR_EINVAL: i64 = 3;
pub const MGMT_ERR_ENOENT: i64 = 5;
pub const MGMT_ERR_ENOTSUP: i64 = 8;

/// What a handler answers.
pub enum Reply {
    /// A CBOR map of these fields.
    Map(Vec<(&'static str, Value)>),
    /// A group error (`err` in SMP v2; a generic `rc` in SMP v1).
    GroupError(u16, i64),
    /// A group error with more fields (the fs group's `len` beside an offset error).
    GroupErrorWith(u16, i64, Vec<(&'static str, Value)>),
    /// A generic MCUmgr error `rc`.
    Rc(i64),
}

/// A field of a request map.
pub fn field<'a>(m: &'a [(Value, Value)], key: &str) -> Option<&'a Value> {
    m.iter()
        .find(|(k, _)| k.as_text() == Some(key))
        .map(|(_, v)| v)
}

pub fn text<'a>(m: &'a [(Value, Value)], key: &str) -> Option<&'a str> {
    field(m, key).and_then(Value::as_text)
}

pub fn uint(m: &[(Value, Value)], key: &str) -> Option<u64> {
    field(m, key)
        .and_then(Value::as_integer)
        .and_then(|i| u64::try_from(i).ok())
}

pub fn bytes<'a>(m: &'a [(Value, Value)], key: &str) -> Option<&'a [u8]> {
    field(m, key).and_then(Value::as_bytes).map(Vec::as_slice)
}
