// Bad input for the run store: a corrupt file, a foreign SQLite database, a newer schema, a
// read-only location, a full database / full disk. Each gives a clear error naming the file and
// leaves what was stored intact.
#include "run_store.h"
#include "schema.h"

#include "core/sha256.h"
#include "temp_dir.h"

#include <sqlite3.h>

#include <QtTest>

#include <fstream>
#include <random>

using namespace lowbit;
using lowbit::test::TempDir;
using nlohmann::json;

namespace {

std::string readAll(const std::filesystem::path &path) {
    std::ifstream in(path, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(in), {});
}

NewRun newRun() {
    NewRun run;
    run.spec = {{"checkpoint", "/m.bin"}};
    run.model = "/m.bin";
    run.checkpointHash = "abc";
    run.method = "none";
    run.methodKey = "{\"name\":\"none\"}";
    run.device = "cpu";
    run.tasks = {{"tinystories", "{}", json::object()}};
    return run;
}

SampleRecord sample(int index, size_t textBytes) {
    static std::mt19937_64 rng(std::random_device{}());
    SampleRecord s;
    s.docId = "doc-" + std::to_string(index);
    s.docHash = sha256Hex(std::to_string(rng()));
    s.target = std::string(textBytes, char('a' + rng() % 26));
    s.tokens = 10;
    s.nll = 1.0 + double(rng() % 1000) / 7.0;
    return s;
}

// A store holding one finished run with `samples` samples; returns its id.
int64_t makeStoreWithRun(const std::filesystem::path &path, int samples) {
    auto store = RunStore::open(path);
    if (!store.ok())
        qFatal("%s", store.error().toString().c_str());
    const int64_t runId = store->createRun(newRun()).value();
    std::vector<SampleRecord> batch;
    for (int i = 0; i < samples; ++i)
        batch.push_back(sample(i, 50));
    if (!store->appendSamples(runId, "tinystories", batch).ok() ||
        !store->finishRun(runId, RunStatus::Done).ok())
        qFatal("could not fill the store");
    return runId;
}

std::string integrity(const std::filesystem::path &path) {
    sqlite3 *db = nullptr;
    sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READONLY, nullptr);
    sqlite3_stmt *statement = nullptr;
    sqlite3_prepare_v2(db, "PRAGMA integrity_check", -1, &statement, nullptr);
    std::string result = sqlite3_step(statement) == SQLITE_ROW
                             ? reinterpret_cast<const char *>(sqlite3_column_text(statement, 0))
                             : "no answer";
    sqlite3_finalize(statement);
    sqlite3_close(db);
    return result;
}

bool contains(const std::string &text, const std::string &part) {
    return text.find(part) != std::string::npos;
}

} // namespace

class TestRunStoreFaults : public QObject {
    Q_OBJECT
private slots:
    void notADatabase();
    void corruptPages();
    void foreignDatabase();
    void newerSchema();
    void unwritableLocation();
    void readOnlyOpen();
    void readOnlyFiles();
    void databaseFull();
    void smallFilesystemFull();
};

void TestRunStoreFaults::notADatabase() {
    TempDir dir;
    const auto path = dir / "runs.sqlite";
    std::string junk(8192, '\0');
    std::mt19937 rng(std::random_device{}());
    for (char &c : junk)
        c = char(rng());
    std::ofstream(path, std::ios::binary) << junk;
    auto store = RunStore::open(path);
    QVERIFY(!store.ok());
    QCOMPARE(store.error().code, ErrorCode::Format);
    QVERIFY2(contains(store.error().message, path.string()), store.error().message.c_str());
    QVERIFY2(contains(store.error().message, "not a SQLite database"),
             store.error().message.c_str());
    QCOMPARE(readAll(path), junk); // untouched
}

void TestRunStoreFaults::corruptPages() {
    TempDir dir;
    const auto path = dir / "runs.sqlite";
    makeStoreWithRun(path, 400);
    std::string bytes = readAll(path);
    QVERIFY(bytes.size() > 3 * 4096);
    // Overwrite every page after the first (schema) page with a pattern: b-tree headers break.
    for (size_t i = 4096; i < bytes.size(); ++i)
        bytes[i] = char(0xA5 ^ (i * 31));
    std::filesystem::remove(dir / "runs.sqlite-wal");
    std::filesystem::remove(dir / "runs.sqlite-shm");
    std::ofstream(path, std::ios::binary | std::ios::trunc) << bytes;
    auto store = RunStore::open(path);
    std::string message;
    if (!store.ok()) {
        message = store.error().message;
    } else {
        auto runs = store->listRuns();
        QVERIFY(!runs.ok());
        message = runs.error().message;
    }
    QVERIFY2(contains(message, path.string()), message.c_str());
    QVERIFY2(contains(message, "corrupt"), message.c_str());
}

void TestRunStoreFaults::foreignDatabase() {
    TempDir dir;
    const auto path = dir / "other.db";
    {
        auto db = Database::open(path);
        QVERIFY(db.ok());
        QVERIFY(db->exec("CREATE TABLE notes (id INTEGER PRIMARY KEY, text TEXT); "
                         "INSERT INTO notes (text) VALUES ('keep me')")
                    .ok());
    }
    const std::string before = readAll(path);
    auto store = RunStore::open(path);
    QVERIFY(!store.ok());
    QCOMPARE(store.error().code, ErrorCode::Format);
    QVERIFY2(contains(store.error().message, "not a lowbit run store"),
             store.error().message.c_str());
    QVERIFY(contains(store.error().message, path.string()));
    QCOMPARE(readAll(path), before); // not switched to WAL, no tables added
    QVERIFY(!std::filesystem::exists(dir / "other.db-wal"));
}

void TestRunStoreFaults::newerSchema() {
    TempDir dir;
    const auto path = dir / "runs.sqlite";
    const int64_t runId = makeStoreWithRun(path, 5);
    {
        auto db = Database::open(path);
        QVERIFY(db->exec("PRAGMA user_version = " + std::to_string(kSchemaVersion + 1)).ok());
    }
    auto store = RunStore::open(path);
    QVERIFY(!store.ok());
    QCOMPARE(store.error().code, ErrorCode::Unsupported);
    QVERIFY2(contains(store.error().message, "newer lowbit"), store.error().message.c_str());
    QVERIFY(!RunStore::open(path, {.readOnly = true}).ok());
    // Stored runs intact: put the version back and read them.
    {
        auto db = Database::open(path);
        QVERIFY(db->exec("PRAGMA user_version = " + std::to_string(kSchemaVersion)).ok());
    }
    auto again = RunStore::open(path);
    QVERIFY(again.ok());
    QCOMPARE(again->samples(runId, "tinystories")->size(), size_t(5));
}

void TestRunStoreFaults::unwritableLocation() {
    // Nobody, root included, can create a folder or file under /proc.
    const std::filesystem::path path = "/proc/lowbit-test/runs.sqlite";
    auto store = RunStore::open(path);
    QVERIFY(!store.ok());
    QCOMPARE(store.error().code, ErrorCode::Io);
    QVERIFY2(contains(store.error().message, "/proc/lowbit-test"), store.error().message.c_str());
}

void TestRunStoreFaults::readOnlyOpen() {
    TempDir dir;
    const auto path = dir / "runs.sqlite";
    const int64_t runId = makeStoreWithRun(path, 7);
    auto store = RunStore::open(path, {.readOnly = true});
    QVERIFY2(store.ok(), store.ok() ? "" : store.error().message.c_str());
    QCOMPARE(store->listRuns()->size(), size_t(1));
    QCOMPARE(store->samples(runId, "tinystories")->size(), size_t(7));
    auto write = store->createRun(newRun());
    QVERIFY(!write.ok());
    QVERIFY2(contains(write.error().message, "read-only"), write.error().message.c_str());
    QVERIFY(!RunStore::open(dir / "absent.sqlite", {.readOnly = true}).ok());
    QVERIFY(!std::filesystem::exists(dir / "absent.sqlite"));
}

void TestRunStoreFaults::readOnlyFiles() {
    if (::geteuid() == 0)
        QSKIP("file permissions do not bind root (the /proc and read-only-open cases cover this)");
    TempDir dir;
    const auto path = dir / "runs.sqlite";
    const int64_t runId = makeStoreWithRun(path, 3);
    namespace fs = std::filesystem;
    fs::permissions(path, fs::perms::owner_read | fs::perms::group_read);
    fs::permissions(dir.path(), fs::perms::owner_read | fs::perms::owner_exec);
    auto store = RunStore::open(path);
    if (store.ok()) {
        auto write = store->createRun(newRun());
        QVERIFY(!write.ok());
        QVERIFY2(contains(write.error().message, path.string()), write.error().message.c_str());
    } else {
        QVERIFY2(contains(store.error().message, path.string()), store.error().message.c_str());
    }
    fs::permissions(dir.path(), fs::perms::owner_all);
    fs::permissions(path, fs::perms::owner_read | fs::perms::owner_write);
    QCOMPARE(RunStore::open(path)->samples(runId, "tinystories")->size(), size_t(3));
}

void TestRunStoreFaults::databaseFull() {
    TempDir dir;
    const auto path = dir / "runs.sqlite";
    const int64_t runId = makeStoreWithRun(path, 10);
    auto store = RunStore::open(path);
    QVERIFY(store.ok());
    // SQLite's page limit stands in for a full disk: writes past it fail with SQLITE_FULL.
    const int64_t pages = store->database().queryInteger("PRAGMA page_count")->value();
    QVERIFY(store->database()
                .queryInteger("PRAGMA max_page_count = " + std::to_string(pages + 2))
                .ok());
    auto created = store->createRun(newRun());
    const int64_t second = created.ok() ? *created : 0;
    Status status;
    int index = 100;
    for (int batch = 0; batch < 50 && status.ok(); ++batch) {
        std::vector<SampleRecord> samples;
        for (int i = 0; i < 20; ++i)
            samples.push_back(sample(index++, 2000));
        status = store->appendSamples(second > 0 ? second : runId, "tinystories", samples);
    }
    QVERIFY(!status.ok());
    QVERIFY2(contains(status.error().message, "disk full"), status.error().message.c_str());
    QVERIFY(contains(status.error().message, path.string()));
    // The failed batch was rolled back; the earlier run is intact and the file is sound.
    QCOMPARE(store->samples(runId, "tinystories")->size(), size_t(10));
    store = makeError(ErrorCode::Internal, "closed");
    QCOMPARE(integrity(path), std::string("ok"));
    auto reopened = RunStore::open(path);
    QVERIFY(reopened.ok());
    QCOMPARE(reopened->samples(runId, "tinystories")->size(), size_t(10));
    QCOMPARE(reopened->run(runId)->status, RunStatus::Done);
}

void TestRunStoreFaults::smallFilesystemFull() {
    // A real full disk needs a small filesystem, e.g. (as root)
    //   mount -t tmpfs -o size=200k tmpfs /tmp/small && LOWBIT_TEST_SMALL_FS=/tmp/small ...
    const char *small = std::getenv("LOWBIT_TEST_SMALL_FS");
    if (!small || !*small)
        QSKIP("set LOWBIT_TEST_SMALL_FS to a folder on a small (~200 KiB) filesystem");
    const auto path =
        std::filesystem::path(small) / ("runs_" + std::to_string(::getpid()) + ".sqlite");
    const int64_t runId = makeStoreWithRun(path, 10);
    Status status;
    {
        auto store = RunStore::open(path);
        QVERIFY(store.ok());
        int index = 100;
        for (int batch = 0; batch < 500 && status.ok(); ++batch) {
            std::vector<SampleRecord> samples;
            for (int i = 0; i < 20; ++i)
                samples.push_back(sample(index++, 2000));
            status = store->appendSamples(runId, "tinystories", samples);
        }
    }
    QVERIFY(!status.ok());
    QVERIFY2(contains(status.error().message, "disk full") ||
                 contains(status.error().message, "I/O error"),
             status.error().message.c_str());
    const int64_t kept =
        RunStore::open(path, {.readOnly = true})->samples(runId, "tinystories")->size();
    QVERIFY(kept >= 10);
    QCOMPARE((kept - 10) % 20, int64_t(0)); // whole batches only
    QCOMPARE(integrity(path), std::string("ok"));
    for (const char *suffix : {"", "-wal", "-shm"})
        std::filesystem::remove(path.string() + suffix);
}

QTEST_APPLESS_MAIN(TestRunStoreFaults)
#include "test_run_store_faults.moc"
