-- A saga that CreateOrder inserts already leased to a local worker (the in-memory hand-off,
-- README "Fulfillment saga") is driven by that worker: waking every replica's claim loop for it
-- only makes each run a claim that finds nothing (about one wasted claim statement per order
-- per replica), and the NOTIFY takes the notification queue's lock at every such commit. Only a
-- saga inserted without an owner, which some worker must claim, wakes the replicas now. A
-- hand-off that is never driven still gives its lease up and is claimed by the poll, as before.
DROP TRIGGER sagas_created ON sagas;
CREATE TRIGGER sagas_created AFTER INSERT ON sagas
    FOR EACH ROW WHEN (NEW.lease_owner IS NULL) EXECUTE FUNCTION sagas_wake();
