//! The operations the input decodes to, the end-of-run settling, and the delivery ledger.

use super::*;

pub fn run(data: &[u8]) {
    let mut r = Reader { data, pos: 0 };
    let shards = 2 + r.below(2);
    let mut w = World::new(shards);
    let mut ops = 0;
    while !r.done() && ops < MAX_OPS {
        ops += 1;
        step(&mut w, &mut r);
    }
    settle(&mut w);
    check_one_session_per_client_id(&w);
    check_ledger(&w);
}

/// At rest, a client id has one session in the whole cluster and at most one connection using
/// it: takeover ends the older one [MQTT-3.1.4-3]. (Each core checks its own client-id index;
/// this checks across shards, which the directory keeps in step.)
fn check_one_session_per_client_id(w: &World) {
    let mut sessions: HashMap<Vec<u8>, Vec<usize>> = HashMap::new();
    for (shard, core) in w.cores.iter().enumerate() {
        for id in core.session_client_ids() {
            sessions.entry(id.to_vec()).or_default().push(shard);
        }
    }
    for (id, shards) in &sessions {
        assert!(
            shards.len() == 1,
            "client id {:?}: a session on each of shards {shards:?}",
            String::from_utf8_lossy(id)
        );
    }
    let mut connected: HashMap<Vec<u8>, Vec<usize>> = HashMap::new();
    for (ci, c) in w.clients.iter().enumerate() {
        if !w.is_conn(ci) {
            continue;
        }
        let Some(conn) = w.cores[c.shard].conn(c.conn) else { continue };
        if conn.is_connected() && !conn.is_closing() {
            connected.entry(conn.client_id.as_bytes().to_vec()).or_default().push(ci);
        }
    }
    for (id, clients) in &connected {
        assert!(
            clients.len() == 1,
            "client id {:?}: clients {clients:?} all connected",
            String::from_utf8_lossy(id)
        );
    }
}

fn step(w: &mut World, r: &mut Reader<'_>) {
    let shards = w.cores.len();
    let op = r.below(24);
    if trace_on() {
        eprintln!("op {op} at byte {}", r.pos - 1);
    }
    match op {
        0 | 1 => w.open(r.below(shards)),
        2 | 3 => with_live(w, r, connect),
        4 | 5 => with_live(w, r, subscribe),
        6 => with_live(w, r, unsubscribe),
        7..=9 => with_live(w, r, publish),
        10 => with_live(w, r, republish),
        11 | 12 => with_live(w, r, ack),
        13 => with_live(w, r, |w, _, ci| w.send(ci, &Packet::PingReq, &[], None)),
        14 => with_live(w, r, disconnect),
        15 => with_live(w, r, auth),
        16 => with_live(w, r, raw),
        17 | 18 => {
            // Drain one client (the others are slow readers meanwhile).
            if !w.clients.is_empty() {
                let ci = r.below(w.clients.len());
                w.drain(ci);
            }
        }
        19 => with_live(w, r, close),
        20 => {
            let ms = ADVANCE_MS[r.below(ADVANCE_MS.len())];
            w.now += Duration::from_millis(ms);
            w.wall += Duration::from_millis(ms);
            for i in 0..shards {
                let _ = w.input(i, Input::Tick);
            }
        }
        21 => {
            let shard = r.below(shards);
            let max = r.below(4);
            let _ = w.input(shard, Input::Inbox { max });
        }
        22 => match r.below(8) {
            0 => w.reload(r.bit()),
            1 => {
                // Hand over the rest of split writes.
                for ci in 0..w.clients.len() {
                    flush_unsent(w, ci);
                }
            }
            2 if r.byte() == 0xA5 => {
                let shard = r.below(shards);
                let _ = w.input(shard, Input::Shutdown);
            }
            3 => {
                let shard = r.below(shards);
                let _ = w.input(shard, Input::Tick);
            }
            _ => w.pump(),
        },
        _ => release(w, r),
    }
}

fn with_live(w: &mut World, r: &mut Reader<'_>, f: impl FnOnce(&mut World, &mut Reader<'_>, usize)) {
    if let Some(ci) = w.pick_live(r) {
        f(w, r, ci);
    }
}

/// `Some(at)`: split the packet's bytes there (the rest is sent later).
fn split(r: &mut Reader<'_>) -> Option<usize> {
    let b = r.byte();
    (b & 0xC0 == 0xC0).then_some(usize::from(b & 0x3F))
}

fn flush_unsent(w: &mut World, ci: usize) {
    let c = &mut w.clients[ci];
    if c.released || c.closed {
        return;
    }
    let rest = c.unsent.split();
    c.pending.extend_from_slice(&rest);
    w.read(ci);
}

fn connect(w: &mut World, r: &mut Reader<'_>, ci: usize) {
    let id_index = r.below(CLIENT_IDS.len());
    let version = if r.below(4) == 0 {
        ProtocolVersion::V3_1_1
    } else {
        ProtocolVersion::V5
    };
    let flags = r.byte();
    let clean_start = flags & 1 == 1;
    let mut properties = ConnectProperties {
        session_expiry_secs: [None, Some(0), Some(10), Some(300), Some(u32::MAX)][r.below(5)],
        receive_maximum: [None, NonZeroU16::new(1), NonZeroU16::new(2), NonZeroU16::new(100)]
            [r.below(4)],
        maximum_packet_size: [None, NonZeroU32::new(40), NonZeroU32::new(1024)][r.below(3)],
        topic_alias_maximum: [None, Some(0), Some(2)][r.below(3)],
        request_problem_information: (flags & 2 == 2).then_some(flags & 4 == 4),
        ..Default::default()
    };
    if flags & 0x18 == 0x18 {
        properties.authentication_method = Some(str_of("X-UNKNOWN"));
    }
    let will = (flags & 0x20 == 0x20).then(|| Will {
        qos: QoS::from_u8(r.byte() % 3).unwrap_or_default(),
        retain: r.bit(),
        topic: str_of(TOPICS[r.below(TOPICS.len())]),
        payload: Bytes::from_static(b"will"),
        properties: WillProperties {
            will_delay_secs: [None, Some(0), Some(5), Some(100)][r.below(4)],
            ..Default::default()
        },
    });
    let keep_alive_secs = [0, 5, 60][r.below(3)];
    let connect = Connect {
        protocol: version,
        clean_start,
        keep_alive_secs,
        properties: properties.clone(),
        client_id: str_of(CLIENT_IDS[id_index]),
        will,
        username: None,
        password: None,
    };
    let s = split(r);
    let c = &mut w.clients[ci];
    if c.version.is_none() && !c.raw_before_connect {
        c.version = Some(version);
        c.clean_start = clean_start;
        let key = match CLIENT_IDS[id_index] {
            "" => format!("#{ci}").into_bytes(),
            id => id.as_bytes().to_vec(),
        };
        w.ids.entry(key.clone()).or_default();
        c.key = Some(key);
        if version.is_v5() {
            c.max_packet = properties
                .maximum_packet_size
                .map_or(c.max_packet, NonZeroU32::get);
            c.receive_max = properties.receive_maximum.map_or(u16::MAX, NonZeroU16::get);
            c.alias_max = properties.topic_alias_maximum.unwrap_or(0);
        }
    }
    if CLIENT_IDS[id_index].is_empty() {
        w.sessions_possible += 1;
    }
    w.send(ci, &Packet::Connect(Box::new(connect)), &[], s);
}

fn subscribe(w: &mut World, r: &mut Reader<'_>, ci: usize) {
    let n = 1 + r.below(2);
    let mut filters = Vec::new();
    for _ in 0..n {
        let b = r.byte();
        let options = SubscriptionOptions {
            qos: QoS::from_u8(b % 3).unwrap_or_default(),
            no_local: b & 0x04 != 0,
            retain_as_published: b & 0x08 != 0,
            retain_handling: match (b >> 4) % 3 {
                0 => RetainHandling::SendAtSubscribe,
                1 => RetainHandling::SendAtSubscribeIfNew,
                _ => RetainHandling::DoNotSend,
            },
        };
        filters.push(SubscribeFilter {
            filter: str_of(FILTERS[r.below(FILTERS.len())]),
            options,
        });
    }
    let subscription_id = (r.below(3) == 0).then(|| NonZeroU32::MIN.saturating_add(r.byte().into()));
    let s = split(r);
    let epoch = w.epoch;
    let c = &mut w.clients[ci];
    let session = c.key.as_ref().and_then(|k| w.ids.get_mut(k)).map(|m| &mut m.next_pid);
    let packet_id = c.next_packet_id(session);
    let model: Vec<_> = filters
        .iter()
        .map(|f| (f.filter.as_bytes().to_vec(), f.options))
        .collect();
    for (f, _) in &model {
        if let Some(s) = c.subs.get_mut(f) {
            s.unstable = true;
        }
        c.own_filters.push(f.clone());
        if let Some(k) = &c.key
            && let Some(m) = w.ids.get_mut(k)
        {
            m.filters.push(f.clone());
        }
    }
    c.pending_subs.insert(packet_id.get(), (model, epoch));
    let p = Packet::Subscribe(Subscribe {
        packet_id,
        subscription_id,
        user_properties: UserProperties::new(),
        filters,
    });
    w.send(ci, &p, &[], s);
}

fn unsubscribe(w: &mut World, r: &mut Reader<'_>, ci: usize) {
    let filter = FILTERS[r.below(FILTERS.len())];
    let c = &mut w.clients[ci];
    if let Some(s) = c.subs.get_mut(filter.as_bytes()) {
        s.unstable = true;
    }
    c.unsubscribed.push(filter.as_bytes().to_vec());
    let session = c.key.as_ref().and_then(|k| w.ids.get_mut(k)).map(|m| &mut m.next_pid);
    let packet_id = c.next_packet_id(session);
    let p = Packet::Unsubscribe(Unsubscribe {
        packet_id,
        user_properties: UserProperties::new(),
        filters: vec![str_of(filter)],
    });
    w.send(ci, &p, &[], None);
}

fn publish(w: &mut World, r: &mut Reader<'_>, ci: usize) {
    let topic = TOPICS[r.below(TOPICS.len())];
    let b = r.byte();
    let qos = QoS::from_u8(b % 3).unwrap_or_default();
    let retain = b & 0x04 != 0;
    let extra = usize::from(r.byte() % 48);
    let expiry = [None, None, Some(1), Some(60)][r.below(4)];
    let alias_mode = r.below(4);
    let s = split(r);
    let seq = w.next_seq;
    w.next_seq += 1;
    let mut payload = BytesMut::new();
    payload.extend_from_slice(PAYLOAD_TAG);
    payload.extend_from_slice(&seq.to_le_bytes());
    payload.extend(std::iter::repeat_n(b'z', extra));
    let (registry_on, epoch, pump_gen) = (w.registry_on, w.epoch, w.pump_gen);
    let c = &mut w.clients[ci];
    let v5 = c.wire_version().is_v5();
    let mut properties = PublishProperties {
        message_expiry_secs: expiry,
        ..Default::default()
    };
    let mut wire_topic = str_of(topic);
    if v5 {
        match alias_mode {
            1 => {
                properties.topic_alias = NonZeroU16::new(1);
                c.my_alias = Some(Bytes::from_static(topic.as_bytes()));
            }
            2 if c.my_alias.as_deref() == Some(topic.as_bytes()) => {
                properties.topic_alias = NonZeroU16::new(1);
                wire_topic = Str::default();
            }
            _ => {}
        }
    }
    // A session raw bytes may have used can hold QoS 2 flows with ids the model's counter
    // does not know: a PUBLISH reusing one is acknowledged as a duplicate and not routed.
    let maybe_foreign_ids = !c.clean_start
        && (w.global_taint || c.key.as_ref().and_then(|k| w.ids.get(k)).is_none_or(|m| m.tainted));
    let session = c.key.as_ref().and_then(|k| w.ids.get_mut(k)).map(|m| &mut m.next_pid);
    let packet_id = c.next_packet_id(session);
    let qos_pid = QosPid::new(qos, packet_id);
    let ledger = (qos != QoS::AtMostOnce).then(|| {
        w.ledger.push(Msg {
            seq,
            topic: topic.as_bytes().to_vec(),
            publisher_key: c.key.clone(),
            pump_gen,
            epoch_sent: epoch,
            epoch_acked: u32::MAX,
            acked: false,
            eligible: !c.tainted && (v5 || !registry_on) && !maybe_foreign_ids,
        });
        w.ledger.len() - 1
    });
    if let Some(m) = ledger {
        c.my_pubs.insert(packet_id.get(), m);
    }
    let p = Packet::Publish(Publish {
        dup: false,
        qos_pid,
        retain,
        topic: wire_topic,
        properties,
        payload: payload.freeze(),
    });
    c.last_pub = Some((p.clone(), ledger));
    w.send(ci, &p, &[], s);
}

/// Sends the last PUBLISH again with DUP set (a retransmission).
fn republish(w: &mut World, _r: &mut Reader<'_>, ci: usize) {
    let Some((Packet::Publish(mut p), _)) = w.clients[ci].last_pub.clone() else {
        return;
    };
    if p.qos_pid.qos() == QoS::AtMostOnce {
        return;
    }
    p.dup = true;
    w.send(ci, &Packet::Publish(p), &[], None);
}

fn ack(w: &mut World, r: &mut Reader<'_>, ci: usize) {
    let b = r.byte();
    let v5 = w.clients[ci].wire_version().is_v5();
    let fail = v5 && b & 0x80 != 0;
    let mut answerable = w.clients[ci].answerable();
    let owed = w.clients[ci].unsent_pubrels();
    let total = answerable.len() + owed.len();
    if b & 0x40 != 0 || total == 0 {
        // An acknowledgement the model cannot follow.
        w.clients[ci].window_unknown = true;
        let id = pid(u16::from(r.byte() % 5));
        let resp = PubResp::new(id, ReasonCode::SUCCESS);
        let p = match b & 3 {
            0 => Packet::PubAck(resp),
            1 => Packet::PubRec(resp),
            2 => Packet::PubRel(resp),
            _ => Packet::PubComp(resp),
        };
        w.send(ci, &p, &[], None);
        return;
    }
    let pick = usize::from(b & 0x3F) % total;
    if pick >= answerable.len() {
        let id = owed[pick - answerable.len()];
        w.clients[ci].owe_pubrel.insert(id, true);
        w.send(ci, &Packet::PubRel(PubResp::new(pid(id), ReasonCode::SUCCESS)), &[], None);
        return;
    }
    let (id, flight) = answerable.swap_remove(pick);
    answer(w, ci, id, flight, fail);
}

/// The client's answer to a server flight.
fn answer(w: &mut World, ci: usize, id: u16, flight: Flight, fail: bool) {
    let reason = if fail {
        ReasonCode::UNSPECIFIED_ERROR
    } else {
        ReasonCode::SUCCESS
    };
    let resp = PubResp::new(pid(id), reason);
    let (p, effect) = match flight {
        Flight::NeedAck => (Packet::PubAck(resp), Effect::EndFlight(id)),
        Flight::NeedRec if fail => (Packet::PubRec(resp), Effect::EndFlight(id)),
        Flight::NeedRec => (Packet::PubRec(resp), Effect::Received(id)),
        Flight::NeedComp => (
            Packet::PubComp(PubResp::new(pid(id), ReasonCode::SUCCESS)),
            Effect::EndFlight(id),
        ),
        Flight::WaitRel => return,
    };
    if let Some(f) = w.clients[ci].outstanding.get_mut(&id) {
        f.1 = true;
    }
    w.send(ci, &p, &[effect], None);
}

fn disconnect(w: &mut World, r: &mut Reader<'_>, ci: usize) {
    let b = r.byte();
    let d = Disconnect {
        reason_code: if b & 1 == 1 {
            ReasonCode(0x04)
        } else {
            ReasonCode::SUCCESS
        },
        properties: DisconnectProperties {
            session_expiry_secs: [None, Some(0), Some(60)][usize::from(b >> 1) % 3],
            ..Default::default()
        },
    };
    w.send(ci, &Packet::Disconnect(d), &[], None);
}

fn auth(w: &mut World, r: &mut Reader<'_>, ci: usize) {
    let a = Auth {
        reason_code: if r.bit() {
            ReasonCode(0x18)
        } else {
            ReasonCode(0x19)
        },
        properties: AuthProperties {
            authentication_method: r.bit().then(|| str_of("X-UNKNOWN")),
            ..Default::default()
        },
    };
    w.send(ci, &Packet::Auth(a), &[], None);
}

fn raw(w: &mut World, r: &mut Reader<'_>, ci: usize) {
    let n = r.below(64);
    let bytes = r.bytes(n).to_vec();
    let s = split(r);
    let c = &mut w.clients[ci];
    if c.version.is_none() {
        c.raw_before_connect = true;
        w.global_taint = true;
        w.sessions_possible += 1;
    } else {
        c.tainted = true;
        c.window_unknown = true;
        if let Some(k) = &c.key
            && let Some(m) = w.ids.get_mut(k)
        {
            m.tainted = true;
        }
    }
    w.write(ci, &bytes, &[], s);
}

fn close(w: &mut World, _r: &mut Reader<'_>, ci: usize) {
    w.drain(ci);
    let (shard, conn) = (w.clients[ci].shard, w.clients[ci].conn);
    if w.is_conn(ci) {
        let _ = w.input(shard, Input::Closed(conn));
    }
    w.clients[ci].closed = true;
}

fn release(w: &mut World, r: &mut Reader<'_>) {
    let open: Vec<usize> = (0..w.clients.len()).filter(|&i| !w.clients[i].released).collect();
    if open.is_empty() {
        return;
    }
    let ci = open[r.below(open.len())];
    w.drain(ci);
    let (shard, conn) = (w.clients[ci].shard, w.clients[ci].conn);
    if w.is_conn(ci) {
        if !w.clients[ci].closed && r.bit() {
            let _ = w.input(shard, Input::Closed(conn));
        }
        let _ = w.input(shard, Input::Release(conn));
    }
    w.clients[ci].released = true;
    w.clients[ci].closed = true;
}

/// Lets the run come to rest: the mesh pumped, every connected client reads everything and
/// answers every flight, until no one receives anything more. The clock does not move.
fn settle(w: &mut World) {
    w.pump();
    for _ in 0..64 {
        let mut quiet = true;
        for ci in 0..w.clients.len() {
            if w.clients[ci].released || w.clients[ci].closed || !w.is_conn(ci) {
                continue;
            }
            // The rest of a split write is read now: what it publishes reaches the clients
            // drained before this one only in the next round.
            if !w.clients[ci].unsent.is_empty() {
                quiet = false;
            }
            flush_unsent(w, ci);
            let before = (w.clients[ci].outstanding.len(), w.clients[ci].delivered.len());
            w.drain(ci);
            for (id, flight) in w.clients[ci].answerable() {
                answer(w, ci, id, flight, false);
                quiet = false;
            }
            let owed = w.clients[ci].unsent_pubrels();
            for id in owed {
                w.clients[ci].owe_pubrel.insert(id, true);
                w.send(ci, &Packet::PubRel(PubResp::new(pid(id), ReasonCode::SUCCESS)), &[], None);
                quiet = false;
            }
            if !w.clients[ci].pending.is_empty() {
                quiet = false;
            }
            if before != (w.clients[ci].outstanding.len(), w.clients[ci].delivered.len()) {
                quiet = false;
            }
        }
        w.pump();
        if quiet {
            return;
        }
    }
}

/// The delivery ledger. For each QoS 1/2 message the broker acknowledged (PUBACK or PUBREC
/// below 0x80) and each *stable* subscription that matched it, the subscriber must have
/// received it; the pairs that did not are at most the drops the cores counted (metrics'
/// `dropped`, all causes, plus `stats.dropped_no_session`), since each drop loses one message
/// for one session.
///
/// A subscription is stable when its connection is still connected at the end, was never
/// given raw bytes nor an acknowledgement the model cannot follow (then it cannot answer every
/// flight and the session's queue may stay full), holds the filter once (not subscribed again
/// or unsubscribed), the filter is not `$share/` (one member of the group receives), a full
/// mesh pump happened between its
/// SUBACK and the PUBLISH, and the policy did not change since SUBSCRIBE was sent. A message
/// counts only if the policy did not change since it was sent, and not if a 3.1.1 client
/// published it under the registry (3.1.1 acknowledges a denied publish as a success).
fn check_ledger(w: &World) {
    let drops: u64 = w
        .cores
        .iter()
        .map(|c| c.metrics().dropped.iter().map(|d| d.get()).sum::<u64>() + c.stats.dropped_no_session)
        .sum();
    let mut missing = Vec::new();
    for m in &w.ledger {
        if !m.acked || !m.eligible || m.epoch_sent != w.epoch || m.epoch_acked != w.epoch {
            continue;
        }
        for (ci, c) in w.clients.iter().enumerate() {
            let connected = !c.released
                && !c.closed
                && !c.tainted
                && !c.window_unknown
                && w.is_conn(ci)
                && w.cores[c.shard].conn(c.conn).is_some_and(|conn| conn.is_connected());
            if !connected {
                continue;
            }
            let same_client = c.key.is_some() && c.key == m.publisher_key;
            let matched = c.subs.iter().any(|(f, s)| {
                !s.unstable
                    && s.epoch_sent == w.epoch
                    && s.epoch_acked == w.epoch
                    && s.pump_gen < m.pump_gen
                    && !f.starts_with(b"$share/")
                    && !(s.options.no_local && same_client)
                    && matches(f, &m.topic)
            });
            if matched && !c.delivered.contains(&m.seq) {
                missing.push((m.seq, ci));
            }
        }
    }
    assert!(
        missing.len() as u64 <= drops,
        "acknowledged messages not delivered (seq, client): {missing:?}; drops counted: {drops}"
    );
}
