//! Shard lineage: a child shard (after a split or a merge) is read only after its parents, so a
//! key's records are read in the order they were written. Shared by the mapping, which starts a
//! shard once its parents are read to the end, and by tools that read a whole stream in one pass.

use crate::source::ShardInfo;
use std::collections::HashSet;

impl ShardInfo {
    /// Whether every parent is `done`. A parent that is not `known` (it expired from the stream)
    /// holds nothing back.
    pub fn parents_done(&self, done: impl Fn(&str) -> bool, known: impl Fn(&str) -> bool) -> bool {
        self.parent_shard_ids.iter().all(|p| done(p) || !known(p))
    }
}

/// Every shard after its parents; otherwise in the order given.
pub fn lineage_order(mut shards: Vec<ShardInfo>) -> Vec<ShardInfo> {
    let known: HashSet<String> = shards.iter().map(|s| s.shard_id.clone()).collect();
    let mut placed: HashSet<String> = HashSet::new();
    let mut ordered = Vec::with_capacity(shards.len());
    while !shards.is_empty() {
        let (now, later): (Vec<ShardInfo>, Vec<ShardInfo>) = shards
            .into_iter()
            .partition(|s| s.parents_done(|p| placed.contains(p), |p| known.contains(p)));
        if now.is_empty() {
            // A cycle cannot happen in Kinesis; do not loop forever if a mock reports one.
            ordered.extend(later);
            break;
        }
        placed.extend(now.iter().map(|s| s.shard_id.clone()));
        ordered.extend(now);
        shards = later;
    }
    ordered
}

/// Every shard of a Kinesis stream, following pagination, with its parents.
pub async fn kinesis_shards(
    client: &aws_sdk_kinesis::Client,
    stream: &str,
) -> Result<Vec<ShardInfo>, aws_sdk_kinesis::error::SdkError<aws_sdk_kinesis::operation::list_shards::ListShardsError>>
{
    let mut shards = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let request = match &token {
            Some(t) => client.list_shards().next_token(t),
            None => client.list_shards().stream_name(stream),
        };
        let out = request.send().await?;
        for shard in out.shards() {
            let parents = [shard.parent_shard_id(), shard.adjacent_parent_shard_id()];
            shards.push(ShardInfo {
                shard_id: shard.shard_id().to_owned(),
                parent_shard_ids: parents.into_iter().flatten().map(str::to_owned).collect(),
            });
        }
        token = out.next_token;
        if token.is_none() {
            return Ok(shards);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shard(id: &str, parents: &[&str]) -> ShardInfo {
        ShardInfo {
            shard_id: id.into(),
            parent_shard_ids: parents.iter().map(|p| p.to_string()).collect(),
        }
    }

    #[test]
    fn children_come_after_their_parents_and_expired_parents_hold_nothing_back() {
        let ordered = lineage_order(vec![
            shard("merged", &["left", "right"]),
            shard("left", &["root"]),
            shard("right", &["root"]),
            shard("root", &[]),
            shard("orphan", &["expired"]),
        ]);
        let ids: Vec<&str> = ordered.iter().map(|s| s.shard_id.as_str()).collect();
        assert_eq!(ids, ["root", "orphan", "left", "right", "merged"]);
    }
}
