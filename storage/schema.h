// The run store's SQLite schema and its migrations. The schema version lives in
// PRAGMA user_version; PRAGMA application_id marks a file as a lowbit run store, so that a
// foreign SQLite file is refused instead of being filled with our tables.
#pragma once

#include "core/result.h"
#include "sqlite_database.h"

namespace lowbit {

constexpr int kSchemaVersion = 2;          // 2: training_steps
constexpr int kApplicationId = 0x4c4f5742; // "LOWB"

// Brings an empty or older lowbit database up to kSchemaVersion in one transaction. Errors:
// a foreign database (tables but not our application id), a newer schema (nothing is changed),
// a corrupt file or a write failure (rolled back).
Status migrateSchema(Database &db);

// Refuses, without changing anything, a foreign SQLite file or a newer schema.
Status checkStoreIdentity(Database &db);

// For a read-only connection: checks the file is a lowbit store this build can read.
Status checkSchemaReadable(Database &db);

} // namespace lowbit
