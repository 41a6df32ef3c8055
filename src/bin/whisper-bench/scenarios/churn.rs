//! `churn`: connections that open, join, and close, one after another.

use std::time::Instant;

use smol::Timer;
use smol::future::FutureExt;

use super::{Lab, capacity_env};
use crate::client::{self, ConnectOptions, OP_CLOSE, Reader};
use crate::relay::Relay;
use crate::report::Metric;
use crate::traffic::{self, Seat};
use crate::wire::Dialect;

const OPTS: ConnectOptions = ConnectOptions {
    read_buffer: 1 << 10,
    rcvbuf: None,
    dialect: Dialect::V2,
};

pub async fn run(lab: &Lab<'_>) -> Result<(), String> {
    let env = capacity_env(64, 64, 8);
    lab.with_relay(&env, async |relay: &mut Relay| cycles(lab, relay).await)
        .await
}

/// Reads until the relay's close frame; its code, or `None` on a bare EOF.
async fn await_close(reader: &mut Reader) -> Result<Option<u16>, String> {
    loop {
        match reader.next_frame().await {
            Ok(Some(f)) if f.opcode == OP_CLOSE => return Ok(Some(client::close_code(f.payload))),
            Ok(Some(_)) => {}
            Ok(None) => return Ok(None),
            Err(e) => return Err(format!("waiting for the close frame: {e}")),
        }
    }
}

/// One cycle: open, join a room of its own, close with 1000 and wait for
/// the relay's answer. Returns whether the answer echoed 1000.
async fn cycle(relay: &Relay, i: u32) -> Result<bool, String> {
    let seat = Seat {
        room: format!("churn{i}"),
        user: format!("u{i}"),
        opts: OPTS,
    };
    let mut m = traffic::open_member(relay.addr, &seat).await?;
    m.writer
        .send_close(1000)
        .await
        .map_err(|e| format!("sending close: {e}"))?;
    Ok(await_close(&mut m.reader).await? == Some(1000))
}

async fn cycles(lab: &Lab<'_>, relay: &Relay) -> Result<(), String> {
    let n = lab.params.churn_cycles;
    let limit = lab.params.setup_limit(n);
    let before = lab.sample(relay);
    let t0 = Instant::now();
    let all = async {
        let mut unechoed = 0u32;
        for i in 0..n {
            if !cycle(relay, i)
                .await
                .map_err(|e| format!("cycle {i}: {e}"))?
            {
                unechoed += 1;
            }
        }
        Ok(unechoed)
    };
    let timeout = async {
        Timer::after(limit).await;
        Err(format!("{n} cycles not done within {} s", limit.as_secs()))
    };
    let unechoed = all.or(timeout).await?;
    let secs = t0.elapsed().as_secs_f64();
    let used = lab.sample(relay).since(&before);
    lab.metric(Metric::new("cycles/s", "1/s", f64::from(n) / secs));
    if used.cpu_ns > 0 {
        let per = used.cpu_ns as f64 / 1000.0 / f64::from(n);
        lab.metric(Metric::new("cpu/cycle", "µs", per));
    }
    if used.syscw > 0 {
        let per = used.syscw as f64 / f64::from(n);
        lab.metric(Metric::new("write syscalls/cycle", "", per));
    }
    if used.syscr > 0 {
        let per = used.syscr as f64 / f64::from(n);
        lab.metric(Metric::new("read syscalls/cycle", "", per));
    }
    if unechoed > 0 {
        lab.note(format!(
            "{unechoed} of {n} closes not answered with code 1000"
        ));
    }
    Ok(())
}
