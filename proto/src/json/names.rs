//! Serde adapters that spell domain names the way the domain does (`Stage::as_str`,
//! `Role::as_str`), so the JSON needs no serde on the domain's types.

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serializer};
use std::collections::BTreeMap;
use switchyard_domain::{Role, Stage};

/// Stages by their domain name.
pub(super) mod stage_name {
    use super::*;

    pub fn serialize<S: Serializer>(stage: &Stage, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(stage.as_str())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Stage, D::Error> {
        Stage::parse(&String::deserialize(d)?).map_err(|e| D::Error::custom(e.0))
    }
}

/// A map keyed by stage, in stage order.
pub(super) mod stage_map {
    use super::*;

    pub fn serialize<S: Serializer>(map: &BTreeMap<Stage, u64>, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(map.iter().map(|(stage, v)| (stage.as_str(), v)))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<Stage, u64>, D::Error> {
        BTreeMap::<String, u64>::deserialize(d)?
            .into_iter()
            .map(|(name, v)| Ok((Stage::parse(&name).map_err(|e| D::Error::custom(e.0))?, v)))
            .collect()
    }
}

/// Roles by their domain name.
pub(super) mod role_name {
    use super::*;

    pub fn serialize<S: Serializer>(role: &Role, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(role.as_str())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Role, D::Error> {
        Role::parse(&String::deserialize(d)?).map_err(D::Error::custom)
    }
}
