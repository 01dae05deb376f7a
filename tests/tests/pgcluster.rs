//! The own-cluster harness itself: a primary with pg_stat_statements loaded and a streaming
//! standby that follows it, both gone after drop.

use switchyard_tests::pgcluster::PgCluster;

#[test]
fn a_primary_and_its_standby_start_replicate_and_are_removed() {
    let cluster = PgCluster::builder().with_standby().start();
    assert_eq!(
        cluster.execute("SHOW shared_preload_libraries"),
        "pg_stat_statements"
    );
    assert_eq!(cluster.execute("SHOW wal_level"), "replica");
    cluster.execute("CREATE TABLE t (id int); INSERT INTO t SELECT generate_series(1, 10)");
    assert_eq!(
        cluster.execute("SELECT application_name FROM pg_stat_replication"),
        cluster.standby_name()
    );
    // The standby replays the insert (a condition with a deadline, polled).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        // Before the replay, the table does not exist there yet.
        let n = cluster.try_execute_on_standby("SELECT count(*) FROM t");
        if n.as_deref() == Ok("10") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the standby never replayed: {n:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert_eq!(
        cluster.execute_on_standby("SELECT pg_is_in_recovery()"),
        "t"
    );
    let (root_port, standby_port) = (cluster.port(), cluster.standby_port());
    assert_ne!(root_port, standby_port);
    drop(cluster);
    for port in [root_port, standby_port] {
        assert!(
            std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
            "port {port} still accepts connections after drop"
        );
    }
}
