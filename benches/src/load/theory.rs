//! Queueing theory for the `erlang` scenario: M/M/c (Erlang C) predictions to compare with what
//! smista achieved.

/// Erlang C predictions for `c` servers, arrival rate `lambda` (per second) and mean service time
/// `aht` (seconds).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct ErlangC {
    /// Offered load in Erlangs (lambda * aht).
    pub load_erlangs: f64,
    /// Server occupancy (load / c).
    pub occupancy: f64,
    /// Probability that an arriving contact waits.
    pub p_wait: f64,
    /// Average speed of answer, seconds.
    pub asa_seconds: f64,
    /// Share answered within `threshold` seconds.
    pub service_level: f64,
}

/// Erlang C for `c` servers; `None` when the queue is unstable (load >= c).
#[must_use]
pub fn erlang_c(c: u32, lambda: f64, aht: f64, threshold: f64) -> Option<ErlangC> {
    let a = lambda * aht;
    let cf = f64::from(c);
    if c == 0 || a >= cf || aht <= 0.0 {
        return None;
    }
    // Erlang B by the stable recurrence, then C from B.
    let mut b = 1.0;
    for k in 1..=c {
        b = a * b / (f64::from(k) + a * b);
    }
    let p_wait = cf * b / (cf - a * (1.0 - b));
    let asa = p_wait * aht / (cf - a);
    let sl = 1.0 - p_wait * (-(cf - a) * threshold / aht).exp();
    Some(ErlangC { load_erlangs: a, occupancy: a / cf, p_wait, asa_seconds: asa, service_level: sl })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_textbook_values() {
        // 100 calls/hour of 3 minutes on 7 agents: A = 5 E. Erlang B(7, 5) = 0.1205, so
        // C = 7 B / (7 - 5 (1 - B)) = 0.3241 and ASA = C * 180 / (7 - 5) = 29.17 s.
        let e = erlang_c(7, 100.0 / 3600.0, 180.0, 20.0).expect("stable");
        assert!((e.load_erlangs - 5.0).abs() < 1e-9);
        assert!((e.p_wait - 0.3241).abs() < 1e-3, "{e:?}");
        assert!((e.asa_seconds - 29.17).abs() < 0.05, "{e:?}");
        // Service level within 20 s: 1 - C exp(-(c - A) 20 / 180).
        assert!((e.service_level - (1.0 - 0.3241 * (-2.0f64 * 20.0 / 180.0).exp())).abs() < 1e-3, "{e:?}");
        assert!(erlang_c(5, 100.0 / 3600.0, 180.0, 20.0).is_none(), "unstable at load = servers");
    }
}
