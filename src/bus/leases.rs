//! Partition leases: which replica consumes which partition of the bus.
//!
//! # Why the bus keeps them
//! A lease is only worth holding while the partition it names is reachable,
//! so it lives where the partitions live: Redis keys under the bus's own hash
//! tag, renewed and rebalanced by one script (`lua/balance.lua`) whose clock
//! is Redis's (`TIME`), so the replicas' clocks never disagree about expiry;
//! in the embedded mode, a table in the in-process bus (one process reads that
//! bus, but two runners in one process still share it, as the tests do). A
//! table in the database would have needed a new owner module on both store
//! backends and a second system to be up for the bus to be consumed.
//!
//! # The rule
//! Each call of [`crate::bus::EventBus::balance`] by a member:
//! 1. renews its membership (it is live until `now + ttl`) and forgets members
//!    and leases that expired;
//! 2. computes its quota: with `live` members and `n` partitions, everyone
//!    gets `n / live` and `n % live` members one more; the member takes one
//!    more only while fewer than `n % live` others hold more than `n / live`;
//! 3. releases its highest partitions above the quota, takes the lowest free
//!    ones up to it, and renews what it holds until `now + ttl`.
//!
//! A newcomer thus gets its share within a renewal or two of everyone (the
//! others release first, then it takes), and a member that stops renewing
//! loses everything after `ttl`; the runner of the next owner claims the
//! entries the previous one left pending.

use super::Partition;

/// The partitions `me` holds after one application of the rule (sorted),
/// given the current unexpired owner of each partition (index = partition)
/// and the number of live members, `me` included.
pub fn plan(me: &str, owners: &[Option<&str>], live: usize) -> Vec<Partition> {
    let n = owners.len();
    let live = live.max(1);
    let (base, extra) = (n / live, n % live);
    let mut held: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
    for owner in owners.iter().flatten() {
        *held.entry(owner).or_default() += 1;
    }
    let above = held
        .iter()
        .filter(|(owner, count)| **owner != me && **count > base)
        .count();
    let quota = if above < extra { base + 1 } else { base };
    let mut mine: Vec<usize> = (0..n).filter(|k| owners[*k] == Some(me)).collect();
    mine.truncate(quota);
    for (k, owner) in owners.iter().enumerate() {
        if mine.len() >= quota {
            break;
        }
        if owner.is_none() {
            mine.push(k);
        }
    }
    mine.sort_unstable();
    mine.into_iter().map(|k| Partition(k as u32)).collect()
}

/// The in-process lease table: members and leases with their expiry.
#[derive(Debug, Default)]
pub struct LeaseTable {
    members: std::collections::HashMap<String, std::time::Instant>,
    /// Owner and expiry per partition.
    leases: std::collections::HashMap<u32, (String, std::time::Instant)>,
}

impl LeaseTable {
    /// [`crate::bus::EventBus::balance`] for `partitions` partitions.
    pub fn balance(&mut self, me: &str, partitions: u32, ttl: std::time::Duration) -> Vec<Partition> {
        let now = std::time::Instant::now();
        let until = now + ttl;
        self.members.insert(me.to_string(), until);
        self.members.retain(|_, expires| *expires > now);
        self.leases.retain(|_, (_, expires)| *expires > now);
        let owners: Vec<Option<&str>> = (0..partitions)
            .map(|k| self.leases.get(&k).map(|(owner, _)| owner.as_str()))
            .collect();
        let mine = plan(me, &owners, self.members.len());
        self.leases
            .retain(|k, (owner, _)| owner != me || mine.contains(&Partition(*k)));
        for partition in &mine {
            self.leases.insert(partition.0, (me.to_string(), until));
        }
        mine
    }

    /// [`crate::bus::EventBus::owners`].
    pub fn owners(&self, partitions: u32) -> Vec<Option<String>> {
        let now = std::time::Instant::now();
        (0..partitions)
            .map(|k| {
                self.leases
                    .get(&k)
                    .filter(|(_, expires)| *expires > now)
                    .map(|(owner, _)| owner.clone())
            })
            .collect()
    }

    /// [`crate::bus::EventBus::leave`].
    pub fn leave(&mut self, me: &str) {
        self.members.remove(me);
        self.leases.retain(|_, (owner, _)| owner != me);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ks(partitions: &[Partition]) -> Vec<u32> {
        partitions.iter().map(|p| p.0).collect()
    }

    #[test]
    fn a_lone_member_takes_every_partition() {
        assert_eq!(ks(&plan("a", &[None, None, None, None], 1)), vec![0, 1, 2, 3]);
    }

    #[test]
    fn a_newcomer_gets_its_share_once_the_holder_released_the_surplus() {
        let full = [Some("a"), Some("a"), Some("a"), Some("a")];
        // b joined: nothing free yet, so b waits; a keeps its quota of 2.
        assert!(plan("b", &full, 2).is_empty());
        assert_eq!(ks(&plan("a", &full, 2)), vec![0, 1]);
        let released = [Some("a"), Some("a"), None, None];
        assert_eq!(ks(&plan("b", &released, 2)), vec![2, 3]);
    }

    #[test]
    fn the_remainder_goes_to_as_many_members_as_there_are_left_over_partitions() {
        // 4 partitions, 3 members: one holds 2, the others 1.
        let owners = [Some("a"), Some("a"), Some("b"), Some("b")];
        assert_eq!(
            ks(&plan("a", &owners, 3)),
            vec![0],
            "b already holds the extra one"
        );
        let after = [Some("a"), None, Some("b"), Some("b")];
        assert_eq!(ks(&plan("c", &after, 3)), vec![1]);
        assert_eq!(
            ks(&plan("b", &[Some("a"), Some("c"), Some("b"), Some("b")], 3)),
            vec![2, 3]
        );
    }

    #[test]
    fn more_members_than_partitions_leaves_some_without() {
        let owners = [Some("a"), Some("b")];
        assert!(plan("c", &owners, 3).is_empty());
        assert_eq!(ks(&plan("c", &[Some("a"), None], 3)), vec![1]);
    }

    #[test]
    fn an_expired_member_loses_its_partitions_to_the_others() {
        let mut table = LeaseTable::default();
        let ttl = std::time::Duration::from_millis(30);
        assert_eq!(ks(&table.balance("a", 2, ttl)), vec![0, 1]);
        assert!(
            table
                .balance("b", 2, std::time::Duration::from_secs(5))
                .is_empty()
        );
        std::thread::sleep(std::time::Duration::from_millis(40));
        assert_eq!(
            ks(&table.balance("b", 2, std::time::Duration::from_secs(5))),
            vec![0, 1]
        );
        table.leave("b");
        assert_eq!(ks(&table.balance("a", 2, ttl)), vec![0, 1]);
    }
}
