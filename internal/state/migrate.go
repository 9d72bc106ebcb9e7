package state

import (
	"encoding/binary"
	"fmt"

	bolt "go.etcd.io/bbolt"
)

const schemaKey = "schema_version"

// migrations[i] takes the file from version i to i+1.
var migrations = []func(*bolt.Tx) error{
	func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bMeta, bOutbox, bResources, bCursors, bWatches, bWebhookIDs, bWebhookExpiry, bSinks} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		return nil
	},
	// 2: seen webhook ids live only in the time-ordered expiry index (and in
	// memory, rebuilt from it at Open). Every id in webhook_ids has its
	// entry there (both were written in one transaction), so the old
	// random-keyed bucket is dropped.
	func(tx *bolt.Tx) error {
		if tx.Bucket(bWebhookIDs) == nil {
			return nil
		}
		return tx.DeleteBucket(bWebhookIDs)
	},
	// 3: the watch queue, appended to by the webhook hot path.
	func(tx *bolt.Tx) error {
		_, err := tx.CreateBucketIfNotExists(bWatchQueue)
		return err
	},
	// 4: webhooks go through data_dir/journal, whose watermarks are in the
	// meta bucket. Nothing to change in the file; the version makes an
	// older relay, which would ignore the journal (its unpublished events
	// and recent webhook ids), refuse to open it.
	func(*bolt.Tx) error { return nil },
}

// SchemaVersion is the version this build writes.
var SchemaVersion = len(migrations)

func (s *Store) migrate() error {
	return s.db.Update(func(tx *bolt.Tx) error {
		meta, err := tx.CreateBucketIfNotExists(bMeta)
		if err != nil {
			return fmt.Errorf("migrate %s: %w", s.path, err)
		}
		v := 0
		if raw := meta.Get([]byte(schemaKey)); len(raw) == 8 {
			v = int(binary.BigEndian.Uint64(raw))
		}
		if v > SchemaVersion {
			return fmt.Errorf("%s has schema version %d but this relay knows %d; run a newer relay or restore a backup", s.path, v, SchemaVersion)
		}
		for ; v < SchemaVersion; v++ {
			if err := migrations[v](tx); err != nil {
				return fmt.Errorf("migrate %s to schema %d: %w", s.path, v+1, err)
			}
			s.log.Info("state schema migrated", "version", v+1)
		}
		return meta.Put([]byte(schemaKey), u64(uint64(v)))
	})
}

func bin64(b []byte) uint64 { return binary.BigEndian.Uint64(b) }
