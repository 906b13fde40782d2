//! Regressions from an attacker's review of `store copy --from`: the peer must send exactly the objects asked for.
