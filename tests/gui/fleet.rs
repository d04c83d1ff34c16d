//! The fleet database in the window's header (`[fleet]`): online with the sync lag and queue,
//! then offline when the server goes away.

use super::*;
use common::postgres::Postgres;

#[test]
fn the_header_shows_the_fleet_online_then_offline() {
    let pg = Postgres::start();
    let url = pg.database("gui_fleet");
    let st = StationDir::with_config(&format!(
        "{}\n[fleet]\nurl = \"{url}\"\nsslmode = \"disable\"\nconnect_timeout_s = 1\n",
        default_config()
    ));
    assert!(st.station(&["fleet", "init"]).status.success());
    let mut h = harness(&st);
    login(&mut h, "op-1");
    wait(&mut h, 20, |h| {
        h.query_by_label_contains("Fleet: online").is_some()
    });
    h.get_by_label("Start").click();
    wait(&mut h, 60, |h| h.query_by_label("PASS").is_some());
    let synced = |pg: &Postgres| -> i64 {
        pg.client("gui_fleet")
            .query_one("SELECT count(*) FROM fleet.enrollments", &[])
            .unwrap()
            .get(0)
    };
    wait(&mut h, 20, |_| synced(&pg) == 1);
    wait(&mut h, 20, |h| {
        h.query_by_label_contains("Fleet: online · lag 0.0 s · 0 queued")
            .is_some()
    });
    pg.halt();
    wait(&mut h, 30, |h| {
        h.query_by_label_contains("Fleet: offline").is_some()
    });
}
