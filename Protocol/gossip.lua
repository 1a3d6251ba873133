-- gossip.lua: a Wireshark/tshark dissector for the gossip wire protocol, version 2
-- (Protocol/SPEC.md), written from the spec alone.
--
--   tshark -X lua_script:Protocol/gossip.lua -r node.pcap            # one line per packet
--   tshark -X lua_script:Protocol/gossip.lua -r node.pcap -V -Y gossip
--   or copy it into Wireshark's personal Lua plugin folder (~/.local/lib/wireshark/plugins/)
--
-- What it shows:
-- * Frames (SPEC §2-§3): the 24-byte header (frame_length, version, flags with each bit,
--   message type, request id, chunk and message raw lengths, checksum), reassembled over TCP
--   with dissect_tcp_pdus (frames split across segments, several frames per segment).
-- * Payloads (§5, §6, §8): every message type's fields, peer lists with identities, the
--   ModelState tensor table and per-tensor summaries of the data (count, min, max, mean,
--   NaN and Inf counts), error replies (status code and text). Compressed payloads (§7) are
--   inflated (and unshuffled) with Wireshark's zlib; a message sent as several frames (§9)
--   is reassembled and its body decoded at its END_STREAM frame.
-- * The secure channel (§13): the three Noise handshake messages (with the ephemeral keys
--   sent in clear) and the transport records, numbered per direction, shown opaque.
--   Records cannot be opened here; use `framedump --keylog` for that.
--
-- Filterable fields: gossip.frame_length, gossip.version, gossip.flags (and
-- gossip.flags.compressed, .shuffled, .response, .error, .end_stream, .checksummed),
-- gossip.type, gossip.kind, gossip.request_id, gossip.chunk_raw_length,
-- gossip.message_raw_length, gossip.checksum, gossip.payload_len, gossip.status,
-- gossip.error_message, gossip.endpoint, gossip.sender, gossip.schema_hash, gossip.peer.*,
-- gossip.architecture, gossip.model.*, gossip.tensor.*, gossip.noise.* and more (see the
-- ProtoField list below).
--
-- Which traffic: TCP ports of the preference "Ports" (default 7000-7009, gossipd's usual
-- bootstrap and peer ports) and, through a heuristic, any TCP stream with a segment that
-- starts with a version-2 frame header or is exactly a Noise handshake message 1 or 2 (the
-- heuristic then claims the server's port for the rest of the capture).
--
-- Hostile bytes: every length is checked against the bytes present before it is used;
-- a malformed payload shows an expert error, never a Lua error. Frames longer than the
-- preference "Max frame bytes" (SPEC §11 default 16 MiB) are not reassembled. Chunked
-- messages are reassembled only up to "Max message bytes" (default 64 MiB); larger ones
-- show their frames without the body; reassembled messages are kept for re-display up to
-- "Max kept bytes" (default 256 MiB) in all, the oldest dropped first. Known limit: Wireshark's zlib inflation has no
-- output bound, so a crafted compressed frame can make Wireshark allocate up to ~1000x
-- its payload; switch "Decompress" off for untrusted captures.

local gossip = Proto("gossip", "Gossip P2P training protocol")

local HEADER = 24

-- Bit operations for every Lua Wireshark has shipped: Lua 5.3+ operators (compiled with
-- load, since they are a syntax error in 5.2), else bit32 (Lua 5.2, Wireshark 4.0), else
-- Wireshark's BitOp module `bit`.
local function native(src) local ok, fn = pcall(load or loadstring, "return " .. src); return ok and fn and fn() end
local band = native("function(a, b) return a & b end") or (bit32 and bit32.band) or bit.band
local bxor = native("function(a, b) return a ~ b end") or (bit32 and bit32.bxor) or bit.bxor
local rshift = native("function(a, n) return a >> n end") or (bit32 and bit32.rshift) or bit.rshift

local type_names = {
    [1] = "Register", [2] = "GetModel", [3] = "GossipExchange", [4] = "Status", [5] = "Ping",
    [6] = "Stop", [7] = "TriggerGossip", [8] = "PushSum", [9] = "Reserve", [10] = "Votes",
    [11] = "WaitConverged", [14] = "Announce", [0xFFFF] = "Connection",
}
local status_names = {
    [0] = "OK", [1] = "CANCELLED", [2] = "UNKNOWN", [3] = "INVALID_ARGUMENT",
    [4] = "DEADLINE_EXCEEDED", [5] = "NOT_FOUND", [6] = "ALREADY_EXISTS",
    [7] = "PERMISSION_DENIED", [8] = "RESOURCE_EXHAUSTED", [9] = "FAILED_PRECONDITION",
    [10] = "ABORTED", [11] = "OUT_OF_RANGE", [12] = "UNIMPLEMENTED", [13] = "INTERNAL",
    [14] = "UNAVAILABLE", [15] = "DATA_LOSS", [16] = "UNAUTHENTICATED", [17] = "MODEL_REJECTED",
}
local dtype_names = { [1] = "F32", [2] = "F16", [3] = "BF16", [4] = "I8" }

local FLAG_Z, FLAG_S, FLAG_R, FLAG_E, FLAG_END, FLAG_C = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20

local f = {
    frame_length = ProtoField.uint32("gossip.frame_length", "Frame length", base.DEC),
    version = ProtoField.uint8("gossip.version", "Version", base.DEC),
    flags = ProtoField.uint8("gossip.flags", "Flags", base.HEX),
    flag_z = ProtoField.bool("gossip.flags.compressed", "COMPRESSED", 8, nil, FLAG_Z),
    flag_s = ProtoField.bool("gossip.flags.shuffled", "SHUFFLED", 8, nil, FLAG_S),
    flag_r = ProtoField.bool("gossip.flags.response", "RESPONSE", 8, nil, FLAG_R),
    flag_e = ProtoField.bool("gossip.flags.error", "ERROR", 8, nil, FLAG_E),
    flag_end = ProtoField.bool("gossip.flags.end_stream", "END_STREAM", 8, nil, FLAG_END),
    flag_c = ProtoField.bool("gossip.flags.checksummed", "CHECKSUMMED", 8, nil, FLAG_C),
    flag_rsv = ProtoField.uint8("gossip.flags.reserved", "Reserved bits", base.HEX, nil, 0xC0),
    type = ProtoField.uint16("gossip.type", "Message type", base.DEC, type_names),
    kind = ProtoField.string("gossip.kind", "Kind"),
    request_id = ProtoField.uint32("gossip.request_id", "Request id", base.DEC),
    chunk_raw_length = ProtoField.uint32("gossip.chunk_raw_length", "Chunk raw length", base.DEC),
    message_raw_length = ProtoField.uint32("gossip.message_raw_length", "Message raw length", base.DEC),
    checksum = ProtoField.uint32("gossip.checksum", "Checksum (CRC-32)", base.HEX),
    payload_len = ProtoField.uint32("gossip.payload_len", "Payload length (as sent)", base.DEC),
    payload = ProtoField.bytes("gossip.payload", "Payload"),
    body = ProtoField.none("gossip.body", "Message body"),
    chunk_index = ProtoField.uint32("gossip.chunk_index", "Chunk index in message", base.DEC),
    message_frames = ProtoField.uint32("gossip.message_frames", "Frames in message", base.DEC),

    status = ProtoField.uint32("gossip.status", "Status", base.DEC, status_names),
    error_message = ProtoField.string("gossip.error_message", "Error message", base.UNICODE),

    endpoint = ProtoField.string("gossip.endpoint", "Endpoint"),
    sender = ProtoField.string("gossip.sender", "Sender"),
    target = ProtoField.string("gossip.target_peer", "Peer to gossip with"),
    schema_hash = ProtoField.uint64("gossip.schema_hash", "Schema hash", base.HEX),
    architecture = ProtoField.string("gossip.architecture", "Architecture"),
    weight = ProtoField.double("gossip.weight", "Averaging weight"),
    mass = ProtoField.double("gossip.mass", "Push-sum mass"),
    lease_ms = ProtoField.uint32("gossip.lease_ms", "Lease (ms)", base.DEC),
    timeout_ms = ProtoField.uint32("gossip.timeout_ms", "Timeout (ms)", base.DEC),
    json = ProtoField.string("gossip.json", "JSON text", base.UNICODE),
    text_len = ProtoField.uint32("gossip.text_len", "Text length", base.DEC),
    ping_bytes = ProtoField.bytes("gossip.ping_bytes", "Ping bytes"),

    peers_count = ProtoField.uint32("gossip.peers.count", "Peer count", base.DEC),
    peer = ProtoField.none("gossip.peer", "Peer"),
    peer_endpoint = ProtoField.string("gossip.peer.endpoint", "Endpoint"),
    peer_identity = ProtoField.bytes("gossip.peer.identity", "Identity (Curve25519 public key)"),
    peer_identity_known = ProtoField.bool("gossip.peer.identity_known", "Identity known"),

    votes_flags = ProtoField.uint8("gossip.votes.flags", "Votes flags", base.HEX),
    votes_finished = ProtoField.bool("gossip.votes.finished", "Finished", 8, nil, 0x01),
    votes_count = ProtoField.uint32("gossip.votes.count", "Voter count", base.DEC),
    voter = ProtoField.string("gossip.votes.voter", "Voter"),

    model = ProtoField.none("gossip.model", "ModelState"),
    round = ProtoField.uint64("gossip.model.round", "Round", base.DEC),
    step = ProtoField.uint64("gossip.model.step", "Step", base.DEC),
    samples = ProtoField.uint64("gossip.model.samples", "Samples", base.DEC),
    model_hash = ProtoField.uint64("gossip.model.schema_hash", "Table schema hash", base.HEX),
    tensor_count = ProtoField.uint32("gossip.model.tensor_count", "Tensor count", base.DEC),
    schema_ok = ProtoField.bool("gossip.model.schema_hash_ok", "Schema hash matches the table"),
    data_offset = ProtoField.uint64("gossip.model.data_offset", "Data offset", base.DEC),
    data_length = ProtoField.uint64("gossip.model.data_length", "Data length", base.DEC),
    tensor = ProtoField.none("gossip.tensor", "Tensor"),
    tensor_name = ProtoField.string("gossip.tensor.name", "Name"),
    tensor_dtype = ProtoField.uint8("gossip.tensor.dtype", "Dtype", base.DEC, dtype_names),
    tensor_rank = ProtoField.uint8("gossip.tensor.rank", "Rank", base.DEC),
    tensor_dim = ProtoField.uint64("gossip.tensor.dim", "Dimension", base.DEC),
    tensor_bytes = ProtoField.uint64("gossip.tensor.byte_count", "Byte count", base.DEC),
    tensor_values = ProtoField.uint32("gossip.tensor.values", "Values", base.DEC),
    tensor_min = ProtoField.double("gossip.tensor.min", "Min"),
    tensor_max = ProtoField.double("gossip.tensor.max", "Max"),
    tensor_mean = ProtoField.double("gossip.tensor.mean", "Mean"),
    tensor_nan = ProtoField.uint32("gossip.tensor.nan", "NaN values", base.DEC),
    tensor_inf = ProtoField.uint32("gossip.tensor.inf", "Infinite values", base.DEC),

    noise_handshake = ProtoField.uint8("gossip.noise.handshake", "Noise handshake message", base.DEC),
    noise_length = ProtoField.uint16("gossip.noise.length", "Noise length", base.DEC),
    noise_ephemeral = ProtoField.bytes("gossip.noise.ephemeral", "Ephemeral public key (e)"),
    noise_sealed = ProtoField.bytes("gossip.noise.sealed", "Encrypted (AES-256-GCM)"),
    noise_record = ProtoField.uint64("gossip.noise.record", "Noise record number", base.DEC),
}
local fields_list = {}
for _, v in pairs(f) do fields_list[#fields_list + 1] = v end
gossip.fields = fields_list

local ex = {
    malformed = ProtoExpert.new("gossip.malformed", "Malformed gossip data", expert.group.MALFORMED, expert.severity.ERROR),
    header = ProtoExpert.new("gossip.bad_header", "Bad gossip frame header", expert.group.MALFORMED, expert.severity.ERROR),
    checksum = ProtoExpert.new("gossip.bad_checksum", "Checksum does not match", expert.group.CHECKSUM, expert.severity.ERROR),
    zlib = ProtoExpert.new("gossip.zlib", "Compressed payload", expert.group.UNDECODED, expert.severity.WARN),
    error_reply = ProtoExpert.new("gossip.error_reply", "Error reply", expert.group.RESPONSE_CODE, expert.severity.NOTE),
    chunk = ProtoExpert.new("gossip.chunk", "Chunked message", expert.group.REASSEMBLE, expert.severity.WARN),
    noise = ProtoExpert.new("gossip.noise.bad", "Bad Noise message", expert.group.MALFORMED, expert.severity.ERROR),
}
gossip.experts = { ex.malformed, ex.header, ex.checksum, ex.zlib, ex.error_reply, ex.chunk, ex.noise }

gossip.prefs.ports = Pref.range("Ports", "7000-7009", "TCP ports decoded as gossip (gossipd's usual bootstrap and peer ports)", 65535)
gossip.prefs.heuristic = Pref.bool("Heuristic", true, "Recognise gossip on any TCP port by its first bytes")
gossip.prefs.decompress = Pref.bool("Decompress", true, "Inflate compressed payloads (Wireshark's zlib; no output bound)")
gossip.prefs.max_frame = Pref.uint("Max frame bytes", 16777216, "Frames longer than this are shown as malformed, not reassembled (SPEC §11 maxFrameBytes)")
gossip.prefs.max_message = Pref.uint("Max message bytes", 67108864, "Chunked messages longer than this are not reassembled")
gossip.prefs.max_kept = Pref.uint("Max kept bytes", 268435456, "Reassembled chunked messages kept for re-display, in all; the oldest are dropped past this")
gossip.prefs.max_summary = Pref.uint("Max summarised values", 4000000, "Tensor summaries (min/max/mean) only for models with at most this many values")
gossip.prefs.crc = Pref.bool("Verify checksums", true, "Check the CRC-32 of checksummed payloads up to 1 MiB")

-- Per direction of a TCP connection (first pass, in capture order): the direction's mode
-- (plaintext frames, or Noise initiator/responder), Noise message counters, and the chunks
-- of a message being reassembled. Per PDU: what the first pass found (Noise numbering,
-- reassembled messages), keyed by frame number and the PDU's leading bytes.
local directions = {}
local pdu_state = {}
-- Reassembled messages kept for re-display (a GUI redraws a packet's tree when it is
-- clicked): oldest first, at most the preference "Max kept bytes" in all.
local kept, kept_bytes = {}, 0
local function keep(st, data)
    st.data = data
    kept[#kept + 1] = st
    kept_bytes = kept_bytes + data:len()
    while kept_bytes > gossip.prefs.max_kept and #kept > 1 do
        local old = table.remove(kept, 1)
        kept_bytes = kept_bytes - old.data:len()
        old.data = nil
        old.why = "the reassembled message was dropped to bound memory (preference Max kept bytes)"
    end
end

function gossip.init()
    directions = {}
    pdu_state = {}
    info_parts = {}
    kept, kept_bytes = {}, 0
end

-- A direction is named by its addresses and ports (tcp.stream and tcp.seq are not used: in a
-- first pass without a tree, such as tshark -2's, other dissectors' fields are not there).
local function dir_key(pinfo)
    return tostring(pinfo.src) .. ":" .. tostring(pinfo.src_port) .. ">" .. tostring(pinfo.dst) .. ":" .. tostring(pinfo.dst_port)
end

local function pdu_key(pinfo, tvb)
    local n = tvb:len()
    local take = n < 40 and n or 40
    return tostring(pinfo.number) .. "|" .. n .. "|" .. tostring(tvb(0, take):bytes())
end

-- Decides a direction's mode from its first bytes: `00 30` (Noise message 1, 48 bytes) or
-- `00 60` (message 2, 96 bytes) start a Noise session unless the bytes read as a plausible
-- plaintext frame header (length 0x3000 or 0x6000 with version 2); anything else is
-- plaintext frames.
local function detect_mode(tvb, offset)
    local n = tvb:len() - offset
    if n < 2 or tvb(offset, 1):uint() ~= 0 then return "plain" end
    local second = tvb(offset + 1, 1):uint()
    if second ~= 0x30 and second ~= 0x60 then return "plain" end
    if n >= 5 and tvb(offset + 2, 2):uint() == 0 and tvb(offset + 4, 1):uint() == 2 then return "plain" end
    return second == 0x30 and "initiator" or "responder"
end

local function direction_state(pinfo, tvb, offset)
    local key = dir_key(pinfo)
    local d = directions[key]
    if d == nil then
        d = { mode = detect_mode(tvb, offset), handshakes = 0, records = 0, msg = nil }
        directions[key] = d
    end
    return d
end

-- PDU length for dissect_tcp_pdus.
local function get_pdu_len(tvb, pinfo, offset)
    local d = direction_state(pinfo, tvb, offset)
    local avail = tvb:len() - offset
    if d.mode ~= "plain" then
        if avail < 2 then return -DESEGMENT_ONE_MORE_SEGMENT end
        return 2 + tvb(offset, 2):uint()
    end
    if avail < 4 then return -DESEGMENT_ONE_MORE_SEGMENT end
    local len = tvb(offset, 4):le_uint()
    if len < HEADER or len > gossip.prefs.max_frame then
        -- Out of step (a receiver would close): show what is left of this segment as malformed.
        return avail
    end
    return len
end

-- A cursor over a payload Tvb that refuses to read past its end.
local Reader = {}
Reader.__index = Reader
local function reader(tvb) return setmetatable({ tvb = tvb, off = 0, len = tvb:len() }, Reader) end
function Reader:need(n, what)
    if n < 0 or self.off + n > self.len then
        error({ gossip = string.format("%s: %d bytes needed at payload offset %d, %d left", what, n, self.off, self.len - self.off) }, 0)
    end
end
function Reader:range(n, what)
    self:need(n, what)
    local r = self.tvb(self.off, n)
    self.off = self.off + n
    return r
end
function Reader:left() return self.len - self.off end
function Reader:u8(tree, field, what)
    local r = self:range(1, what); if tree then tree:add(field, r) end; return r:uint()
end
function Reader:u16(tree, field, what)
    local r = self:range(2, what); if tree then tree:add_le(field, r) end; return r:le_uint()
end
function Reader:u32(tree, field, what)
    local r = self:range(4, what); if tree then tree:add_le(field, r) end; return r:le_uint()
end
function Reader:u64(tree, field, what)
    local r = self:range(8, what); if tree then tree:add_le(field, r) end; return r:le_uint64()
end
function Reader:f64(tree, field, what)
    local r = self:range(8, what); local v = r:le_float(); if tree then tree:add(field, r, v) end; return v
end
-- `str`: u16 length + UTF-8.
function Reader:str(tree, field, what)
    local start = self.off
    local n = self:range(2, what .. " length"):le_uint()
    local s = n > 0 and self:range(n, what):string(ENC_UTF_8) or ""
    if tree then tree:add(field, self.tvb(start, 2 + n), s) end
    return s
end
-- `text`: u32 length + UTF-8.
function Reader:text(tree, field, what)
    local start = self.off
    local n = self:range(4, what .. " length"):le_uint()
    if tree then tree:add_le(f.text_len, self.tvb(start, 4)) end
    local s = n > 0 and self:range(n, what):string(ENC_UTF_8) or ""
    if tree then
        if n > 0 then tree:add(field, self.tvb(start + 4, n), s) else tree:add(field, self.tvb(start, 4), s) end
    end
    return s
end
function Reader:done(what)
    if self.off ~= self.len then
        error({ gossip = string.format("%s: %d trailing bytes at payload offset %d", what, self.len - self.off, self.off) }, 0)
    end
end

local function hex(ba) return tostring(ba):lower() end

local function peerlist(r, tree)
    local start = r.off
    local count = r:u32(tree, f.peers_count, "peer count")
    if count * 34 > r:left() then
        error({ gossip = string.format("peer count %d cannot fit in the %d bytes left", count, r:left()) }, 0)
    end
    for _ = 1, count do
        local s0 = r.off
        local pt = tree:add(f.peer, r.tvb(s0, 0))
        local ep = r:str(pt, f.peer_endpoint, "peer endpoint")
        local idr = r:range(32, "peer identity")
        pt:add(f.peer_identity, idr)
        local known = hex(idr:bytes()) ~= string.rep("0", 64)
        pt:add(f.peer_identity_known, idr, known)
        pt:set_len(r.off - s0)
        pt:append_text(": " .. ep .. (known and (" id=" .. hex(idr:bytes())) or " id=unknown"))
    end
    return count
end

-- Inverts the byte shuffle of SPEC §7 (element size 4). Works on Lua strings in blocks of
-- 1024 elements (string.byte / string.char over many values at once): per-byte ByteArray
-- calls took seconds per MiB.
local unpack_values = table.unpack or unpack
local function unshuffle(ba)
    local raw = ba:raw()
    local len = #raw
    local n = math.floor(len / 4)
    local p0, p1, p2, p3 = raw:sub(1, n), raw:sub(n + 1, 2 * n), raw:sub(2 * n + 1, 3 * n), raw:sub(3 * n + 1, 4 * n)
    local out = {}
    for i = 1, n, 1024 do
        local j = math.min(i + 1023, n)
        local a0, a1, a2, a3 = { p0:byte(i, j) }, { p1:byte(i, j) }, { p2:byte(i, j) }, { p3:byte(i, j) }
        local t = {}
        for k = 1, j - i + 1 do
            local m = 4 * k
            t[m - 3], t[m - 2], t[m - 1], t[m] = a0[k], a1[k], a2[k], a3[k]
        end
        out[#out + 1] = string.char(unpack_values(t))
    end
    out[#out + 1] = raw:sub(4 * n + 1)
    return ByteArray.new(table.concat(out), true)
end

-- Min, max, sum, NaN and infinity counts of a stream of values: add(v) for each, then
-- result() gives mn, mx, sum, nan, inf, finite.
local function stats()
    local mn, mx, sum, nan, inf, finite = math.huge, -math.huge, 0.0, 0, 0, 0
    local function add(v)
        if v ~= v then nan = nan + 1
        elseif v == math.huge or v == -math.huge then inf = inf + 1
        else
            if v < mn then mn = v end
            if v > mx then mx = v end
            sum = sum + v; finite = finite + 1
        end
    end
    local function result() return mn, mx, sum, nan, inf, finite end
    return add, result
end

-- Statistics of little-endian float32 values in a TvbRange, as framedump computes them
-- (NaN and infinities counted apart; min, max and mean over the finite values, the sum in
-- double precision in order). Reads 256 values per Struct.unpack call.
local function summarise(range, count)
    local raw = range:raw()
    local add, result = stats()
    local pos = 1
    local block = "<" .. string.rep("f", 256)
    local done = 0
    while done < count do
        local k = math.min(256, count - done)
        local values = { Struct.unpack(k == 256 and block or ("<" .. string.rep("f", k)), raw, pos) }
        for i = 1, k do add(values[i]) end
        pos = pos + 4 * k
        done = done + k
    end
    return result()
end

-- binary16 bits -> number (SPEC §6.1, F16).
local function half_to_number(h)
    local sign = h >= 0x8000 and -1 or 1
    local e = math.floor(h / 1024) % 32
    local m = h % 1024
    if e == 0 then return sign * m * 2 ^ -24 end
    if e == 31 then if m == 0 then return sign * math.huge else return 0 / 0 end end
    return sign * (1 + m / 1024) * 2 ^ (e - 15)
end

-- Min, max, sum, NaN and infinity counts of `count` values of a tensor in `dtype` (SPEC
-- §6.1): F32 as they are; F16, BF16 and block-scaled I8 dequantized to float32 first (§6.5).
local function summarise_dtype(range, count, dtype)
    if dtype == 1 then return summarise(range, count) end
    local raw = range:raw()
    local add, result = stats()
    local pos, done = 1, 0
    while done < count do
        local k = math.min(256, count - done)
        if dtype == 4 then
            local scale = Struct.unpack("<f", raw, pos)
            local values = { Struct.unpack("<" .. string.rep("b", k), raw, pos + 4) }
            for i = 1, k do add(Struct.unpack("<f", Struct.pack("<f", values[i] * scale))) end
            pos = pos + 4 + k
        else
            local values = { Struct.unpack("<" .. string.rep("H", k), raw, pos) }
            for i = 1, k do
                if dtype == 3 then add(Struct.unpack("<f", Struct.pack("<I4", values[i] * 65536)))
                else add(half_to_number(values[i])) end
            end
            pos = pos + 2 * k
        end
        done = done + k
    end
    return result()
end

local function model_state(r, tree)
    local s0 = r.off
    local mt = tree:add(f.model, r.tvb(s0, r:left()))
    local arch = r:str(mt, f.architecture, "architecture")
    r:u64(mt, f.round, "round"); r:u64(mt, f.step, "step"); r:u64(mt, f.samples, "samples")
    r:u64(mt, f.model_hash, "schema_hash")
    local count = r:u32(mt, f.tensor_count, "tensor count")
    if count * 12 > r:left() then
        error({ gossip = string.format("tensor count %d cannot fit in the %d bytes left", count, r:left()) }, 0)
    end
    local hash_item = r.tvb(r.off - 12, 8)
    local tensors = {}
    local total = 0
    local hash_text = {}
    for i = 1, count do
        local t0 = r.off
        local tt = mt:add(f.tensor, r.tvb(t0, 0))
        local name = r:str(tt, f.tensor_name, "tensor name")
        local dtype = r:u8(tt, f.tensor_dtype, "tensor dtype")
        local rank = r:u8(tt, f.tensor_rank, "tensor rank")
        local dims, elems = {}, 1
        for _ = 1, rank do
            local d = r:u64(tt, f.tensor_dim, "tensor dimension"):tonumber()
            dims[#dims + 1] = tostring(d)
            elems = elems * d
        end
        local bytes = r:u64(tt, f.tensor_bytes, "tensor byte count"):tonumber()
        tt:set_len(r.off - t0)
        tt:append_text(string.format(": %s %s [%s]", name, dtype_names[dtype] or ("dtype " .. dtype), table.concat(dims, ", ")))
        -- SPEC §6.1: F32 4n, F16/BF16 2n, I8 n + 4 x ceil(n / 256) (block-scaled int8, §6.5).
        local want
        if dtype == 1 then want = elems * 4
        elseif dtype == 2 or dtype == 3 then want = elems * 2
        elseif dtype == 4 then want = elems + 4 * math.ceil(elems / 256)
        else tt:add_proto_expert_info(ex.malformed, "unknown dtype " .. dtype) end
        if want and bytes ~= want then tt:add_proto_expert_info(ex.malformed, "byte count " .. bytes .. " is not " .. want .. " for " .. elems .. " values of " .. dtype_names[dtype]) end
        tensors[i] = { tree = tt, bytes = bytes, name = name, dtype = dtype, elems = elems }
        -- SPEC §6.3: the hash names the model's dtype, always F32 (F16/BF16/I8 are wire encodings).
        hash_text[i] = name .. ":F32:" .. table.concat(dims, ",") .. "\n"
        total = total + bytes
    end
    -- SPEC §6.3: FNV-1a 64 over "name:dtype:dims\n" per tensor must equal the schema hash.
    local declared = hash_item:le_uint64()
    local h = UInt64(0x84222325, 0xcbf29ce4)
    local prime = UInt64(0x000001b3, 0x00000100)
    local text = table.concat(hash_text)
    for i = 1, #text do h = h:bxor(UInt64(text:byte(i))) * prime end
    if h ~= declared then
        mt:add_proto_expert_info(ex.malformed, "schema_hash 0x" .. declared:tohex() .. " but the table hashes to 0x" .. h:tohex() .. " (SPEC §6.3)")
    end
    mt:add(f.schema_ok, hash_item, h == declared)
    local data_offset = r:u64(mt, f.data_offset, "data_offset"):tonumber()
    local data_length = r:u64(mt, f.data_length, "data_length"):tonumber()
    if data_length ~= total then mt:add_proto_expert_info(ex.malformed, "data_length " .. data_length .. " is not the sum of the byte counts " .. total) end
    if data_offset < r.off or data_offset % 64 ~= 0 or data_offset - r.off >= 64 then
        mt:add_proto_expert_info(ex.malformed, "data_offset " .. data_offset .. " is not the first multiple of 64 at or after " .. r.off)
    end
    r:range(data_offset - r.off, "padding")
    local elems_total = 0
    for _, t in ipairs(tensors) do elems_total = elems_total + t.elems end
    local want_summary = elems_total <= gossip.prefs.max_summary
    for _, t in ipairs(tensors) do
        local dr = r:range(t.bytes, "data of tensor " .. t.name)
        local n = t.elems
        t.tree:add(f.tensor_values, dr, n)
        local known = (t.dtype == 1 and t.bytes == n * 4) or ((t.dtype == 2 or t.dtype == 3) and t.bytes == n * 2)
            or (t.dtype == 4 and t.bytes == n + 4 * math.ceil(n / 256))
        if want_summary and known and n > 0 then
            local mn, mx, sum, nan, inf, finite = summarise_dtype(dr, n, t.dtype)
            if finite > 0 then
                t.tree:add(f.tensor_min, dr, mn); t.tree:add(f.tensor_max, dr, mx); t.tree:add(f.tensor_mean, dr, sum / finite)
            end
            t.tree:add(f.tensor_nan, dr, nan); t.tree:add(f.tensor_inf, dr, inf)
        end
    end
    mt:append_text(string.format(": %s, %d tensors, %d data bytes", arch, count, total))
    return arch
end

-- Decodes a whole message payload (all chunks, inflated) into `tree`. Returns a short text
-- for the Info column.
local function decode_body(tvb, tree, mtype, flags)
    local r = reader(tvb)
    local is_reply = band(flags, FLAG_R) ~= 0
    if band(flags, FLAG_E) ~= 0 then
        local code = r:u32(tree, f.status, "status code")
        local msg = r:text(tree, f.error_message, "error message")
        r:done("error reply")
        tree:add_proto_expert_info(ex.error_reply, string.format("%s (%d): %s", status_names[code] or "UNKNOWN", code, msg))
        return string.format("status=%s(%d)", status_names[code] or "UNKNOWN", code)
    end
    local info = ""
    if mtype == 1 then
        if not is_reply then
            info = r:str(tree, f.endpoint, "endpoint")
            r:u64(tree, f.schema_hash, "schema_hash")
        else
            local n = peerlist(r, tree)
            info = "peers=" .. n .. " arch=" .. r:str(tree, f.architecture, "architecture")
            r:u64(tree, f.schema_hash, "schema_hash")
        end
    elseif mtype == 2 then
        if not is_reply then r:u64(tree, f.schema_hash, "schema_hash")
        else info = "arch=" .. model_state(r, tree) end
    elseif mtype == 3 or mtype == 8 then
        if not is_reply then
            info = "sender=" .. r:str(tree, f.sender, "sender")
            r:f64(tree, mtype == 3 and f.weight or f.mass, mtype == 3 and "weight" or "mass")
            model_state(r, tree)
        elseif mtype == 3 then
            r:f64(tree, f.weight, "weight")
            info = "peers=" .. peerlist(r, tree)
            model_state(r, tree)
        end
    elseif mtype == 4 or mtype == 7 or mtype == 11 then
        if is_reply then r:text(tree, f.json, "JSON text")
        elseif mtype == 7 then info = "peer=" .. r:str(tree, f.target, "peer")
        elseif mtype == 11 then info = "timeout_ms=" .. r:u32(tree, f.timeout_ms, "timeout_ms") end
    elseif mtype == 5 then
        if r:left() > 0 then tree:add(f.ping_bytes, r:range(r:left(), "ping bytes")) end
    elseif mtype == 9 then
        if not is_reply then
            info = "sender=" .. r:str(tree, f.sender, "sender")
            r:u64(tree, f.schema_hash, "schema_hash")
            r:u32(tree, f.lease_ms, "lease_ms")
        end
    elseif mtype == 10 then
        info = "sender=" .. r:str(tree, f.sender, "sender")
        local fr = r:range(1, "flags")
        local ft = tree:add(f.votes_flags, fr)
        ft:add(f.votes_finished, fr)
        if band(fr:uint(), 0xFE) ~= 0 then ft:add_proto_expert_info(ex.malformed, "reserved votes flag bits set") end
        local count = r:u32(tree, f.votes_count, "voter count")
        if count * 2 > r:left() then
            error({ gossip = string.format("voter count %d cannot fit in the %d bytes left", count, r:left()) }, 0)
        end
        for _ = 1, count do r:str(tree, f.voter, "voter") end
    else
        if r:left() > 0 then tree:add(f.payload, r:range(r:left(), "payload")) end
        return "unknown type"
    end
    r:done(type_names[mtype] or "message")
    return info
end

-- CRC-32 (IEEE, reflected) of a TvbRange, table-driven.
local crc_table
local function crc32(range)
    if not crc_table then
        crc_table = {}
        for i = 0, 255 do
            local c = i
            for _ = 1, 8 do
                if band(c, 1) ~= 0 then c = bxor(0xEDB88320, rshift(c, 1)) else c = rshift(c, 1) end
            end
            crc_table[i] = c
        end
    end
    local crc = 0xFFFFFFFF
    local ba = range:bytes()
    for i = 0, ba:len() - 1 do
        crc = bxor(crc_table[band(bxor(crc, ba:get_index(i)), 0xFF)], rshift(crc, 8))
    end
    crc = bxor(crc, 0xFFFFFFFF)
    if crc < 0 then crc = crc + 4294967296 end
    return crc
end

-- The raw bytes of one frame's payload (inflated and unshuffled), as a ByteArray, or nil
-- and a reason.
local function raw_chunk(payload, flags, chunk_raw)
    if band(flags, FLAG_Z) == 0 then
        return payload and payload:bytes() or ByteArray.new()
    end
    if not gossip.prefs.decompress then return nil, "decompression is switched off" end
    if payload == nil then return nil, "compressed frame with an empty payload" end
    if payload:len() > chunk_raw + math.floor(chunk_raw / 8) + 64 then
        return nil, "compressed payload larger than chunk_raw_length + chunk_raw_length/8 + 64"
    end
    -- uncompress_zlib from Wireshark 4.4 on, uncompress before (looking a missing method
    -- up on a TvbRange raises an error, hence pcall).
    local ok, t = pcall(function() return payload:uncompress_zlib("Inflated chunk") end)
    if not ok then ok, t = pcall(function() return payload:uncompress("Inflated chunk") end) end
    if not ok or t == nil then return nil, "corrupt zlib stream" end
    local ba = t:range():bytes()
    if ba:len() ~= chunk_raw then
        return nil, string.format("zlib stream inflates to %d bytes, not chunk_raw_length %d", ba:len(), chunk_raw)
    end
    if band(flags, FLAG_S) ~= 0 then ba = unshuffle(ba) end
    return ba
end

local function flags_text(flags)
    local parts = {}
    if band(flags, FLAG_Z) ~= 0 then parts[#parts + 1] = "Z" end
    if band(flags, FLAG_S) ~= 0 then parts[#parts + 1] = "S" end
    if band(flags, FLAG_R) ~= 0 then parts[#parts + 1] = "R" end
    if band(flags, FLAG_E) ~= 0 then parts[#parts + 1] = "E" end
    if band(flags, FLAG_END) ~= 0 then parts[#parts + 1] = "END" end
    if band(flags, FLAG_C) ~= 0 then parts[#parts + 1] = "C" end
    return #parts == 0 and "-" or table.concat(parts, "|")
end

-- The Info column: one text per PDU, each PDU once (TCP may hand the same reassembled PDU
-- to the dissector more than once in a packet).
local info_parts = {}
local function add_info(pinfo, key, text)
    local parts = info_parts[pinfo.number]
    if parts == nil then parts = { seen = {} }; info_parts[pinfo.number] = parts end
    if not parts.seen[key] then
        parts.seen[key] = true
        parts[#parts + 1] = text
    end
    pinfo.cols.info:clear_fence()
    pinfo.cols.info:set(table.concat(parts, "; "))
    pinfo.cols.info:fence()
end

local function dissect_noise(tvb, pinfo, tree, d)
    local n = tvb:len()
    local item = tree:add(gossip, tvb(), "Gossip secure channel (Noise_XXpsk3_25519_AESGCM_SHA256)")
    local key = pdu_key(pinfo, tvb)
    local st = pdu_state[key]
    if st == nil then
        local expected = d.mode == "initiator" and ({ 48, 64 })[d.handshakes + 1] or (d.mode == "responder" and d.handshakes == 0 and 96 or nil)
        if expected ~= nil then
            d.handshakes = d.handshakes + 1
            st = { handshake = d.mode == "initiator" and (d.handshakes == 1 and 1 or 3) or 2, expected = expected }
        else
            st = { record = d.records }
            d.records = d.records + 1
        end
        pdu_state[key] = st
    end
    local len = n >= 2 and tvb(0, 2):uint() or 0
    item:add(f.noise_length, tvb(0, 2))
    if st.handshake then
        item:add(f.noise_handshake, tvb(0, 2), st.handshake)
        item:append_text(string.format(": handshake message %d, %d bytes", st.handshake, len))
        if len ~= st.expected then
            item:add_proto_expert_info(ex.noise, string.format("handshake message %d must be %d bytes, not %d", st.handshake, st.expected, len))
        end
        if st.handshake ~= 3 and n >= 34 then item:add(f.noise_ephemeral, tvb(2, 32)) end
        local from = st.handshake == 3 and 2 or 34
        if n > from then item:add(f.noise_sealed, tvb(from, n - from)) end
        add_info(pinfo, key, string.format("Noise handshake msg=%d len=%d", st.handshake, len))
    else
        item:add(f.noise_record, tvb(0, 2), UInt64(st.record))
        item:append_text(string.format(": record %d, %d bytes (encrypted)", st.record, len))
        if len < 17 then item:add_proto_expert_info(ex.noise, "record shorter than 17 bytes (tag included)") end
        if n > 2 then item:add(f.noise_sealed, tvb(2, n - 2)) end
        add_info(pinfo, key, string.format("Noise record=%d len=%d", st.record, len))
    end
    return n
end

local function dissect_frame(tvb, pinfo, tree)
    local d = direction_state(pinfo, tvb, 0)
    pinfo.cols.protocol:set("GOSSIP")
    if d.mode ~= "plain" then return dissect_noise(tvb, pinfo, tree, d) end

    local n = tvb:len()
    local item = tree:add(gossip, tvb())
    if n < HEADER then
        item:add_proto_expert_info(ex.header, string.format("%d bytes: shorter than a frame header (24 bytes); stream out of step", n))
        add_info(pinfo, pdu_key(pinfo, tvb), "malformed")
        return n
    end
    local frame_length = tvb(0, 4):le_uint()
    local flags = tvb(5, 1):uint()
    local mtype = tvb(6, 2):le_uint()
    local rid = tvb(8, 4):le_uint()
    local chunk_raw = tvb(12, 4):le_uint()
    local message_raw = tvb(16, 4):le_uint()
    local checksum = tvb(20, 4):le_uint()
    local kind = band(flags, FLAG_E) ~= 0 and "error" or (band(flags, FLAG_R) ~= 0 and "reply" or "request")
    local tname = type_names[mtype] or ("Unknown(" .. mtype .. ")")

    item:add_le(f.frame_length, tvb(0, 4))
    local vi = item:add(f.version, tvb(4, 1))
    if tvb(4, 1):uint() ~= 2 then vi:add_proto_expert_info(ex.header, "version " .. tvb(4, 1):uint() .. " (this dissector reads version 2)") end
    local fi = item:add(f.flags, tvb(5, 1))
    fi:append_text(" (" .. flags_text(flags) .. ")")
    fi:add(f.flag_z, tvb(5, 1)); fi:add(f.flag_s, tvb(5, 1)); fi:add(f.flag_r, tvb(5, 1))
    fi:add(f.flag_e, tvb(5, 1)); fi:add(f.flag_end, tvb(5, 1)); fi:add(f.flag_c, tvb(5, 1)); fi:add(f.flag_rsv, tvb(5, 1))
    item:add_le(f.type, tvb(6, 2))
    item:add(f.kind, tvb(5, 1), kind)
    item:add_le(f.request_id, tvb(8, 4))
    item:add_le(f.chunk_raw_length, tvb(12, 4))
    item:add_le(f.message_raw_length, tvb(16, 4))
    local ci = item:add_le(f.checksum, tvb(20, 4))
    item:add(f.payload_len, tvb(0, 4), frame_length - HEADER)
    item:append_text(string.format(", %s %s, id %d, flags %s, %d bytes", tname, kind, rid, flags_text(flags), frame_length))
    local summary = string.format("%s %s id=%d flags=%s len=%d raw=%d/%d", tname, kind, rid, flags_text(flags), frame_length, chunk_raw, message_raw)

    -- Header checks (SPEC §2); a frame that fails them is shown, not decoded.
    local problem
    if frame_length < HEADER then problem = string.format("frame_length %d is below the 24-byte header (stream out of step)", frame_length)
    elseif frame_length > gossip.prefs.max_frame then problem = string.format("frame_length %d is above the preference Max frame bytes (%d)", frame_length, gossip.prefs.max_frame)
    elseif frame_length ~= n then problem = string.format("frame_length %d but %d bytes available (stream out of step)", frame_length, n)
    elseif band(flags, 0xC0) ~= 0 then problem = "reserved flag bits 0x40/0x80 set"
    elseif band(flags, FLAG_S) ~= 0 and band(flags, FLAG_Z) == 0 then problem = "SHUFFLED without COMPRESSED"
    elseif band(flags, FLAG_E) ~= 0 and band(flags, FLAG_R) == 0 then problem = "ERROR without RESPONSE"
    elseif mtype == 0 then problem = "message_type 0 is reserved"
    elseif chunk_raw > message_raw then problem = "chunk_raw_length above message_raw_length"
    elseif band(flags, FLAG_Z) == 0 and chunk_raw ~= frame_length - HEADER then problem = "uncompressed frame whose chunk_raw_length differs from the payload size"
    elseif band(flags, FLAG_C) == 0 and checksum ~= 0 then problem = "checksum set without CHECKSUMMED" end
    if problem then
        item:add_proto_expert_info(ex.header, problem)
        if n > HEADER then item:add(f.payload, tvb(HEADER, n - HEADER)) end
        add_info(pinfo, pdu_key(pinfo, tvb), summary .. " [malformed]")
        return n
    end
    local payload = frame_length > HEADER and tvb(HEADER, frame_length - HEADER) or nil
    if payload then item:add(f.payload, payload) end
    if band(flags, FLAG_C) ~= 0 and gossip.prefs.crc and (payload == nil or payload:len() <= 1048576) then
        local crc = payload and crc32(payload) or 0
        if crc ~= checksum then
            ci:add_proto_expert_info(ex.checksum, string.format("checksum 0x%08x, payload's CRC-32 is 0x%08x", checksum, crc))
        else
            ci:append_text(" [correct]")
        end
    end

    -- Message reassembly (SPEC §9): single-frame messages are decoded at once; the chunks of
    -- longer ones are collected on the first pass and the message decoded at END_STREAM.
    local is_end = band(flags, FLAG_END) ~= 0
    local body_tvb, why
    local key = pdu_key(pinfo, tvb)
    local single = is_end and chunk_raw == message_raw
    if pdu_state[key] == nil and single and (pinfo.visited or d.msg == nil) then
        local ba, err = raw_chunk(payload, flags, chunk_raw)
        if ba == nil then why = err
        elseif band(flags, FLAG_Z) ~= 0 then body_tvb = ba:tvb("Inflated payload")
        else body_tvb = payload and payload:tvb() or ByteArray.new():tvb("Empty payload") end
    else
        local st = pdu_state[key]
        if st == nil then
            st = {}
            local m = d.msg
            if m ~= nil and (m.type ~= mtype or m.rid ~= rid or m.total ~= message_raw) then
                st.error = string.format("frame of another message (type %d id %d) before END_STREAM of type %d id %d", mtype, rid, m.type, m.rid)
                m = nil
            end
            if m == nil then
                m = { type = mtype, rid = rid, total = message_raw, got = 0, frames = 0,
                      keep = message_raw <= gossip.prefs.max_message, data = ByteArray.new() }
            end
            m.frames = m.frames + 1
            m.got = m.got + chunk_raw
            st.index = m.frames
            if m.keep and m.ok ~= false then
                local ba, err = raw_chunk(payload, flags, chunk_raw)
                if ba == nil then m.ok = false; m.why = err else m.data:append(ba) end
            end
            if m.got > m.total then st.error = "chunks overrun message_raw_length" end
            if is_end then
                st.frames = m.frames
                if m.got ~= m.total then st.error = st.error or string.format("END_STREAM after %d of %d bytes", m.got, m.total)
                elseif not m.keep then st.why = string.format("message of %d bytes is above the preference Max message bytes", m.total)
                elseif m.ok == false then st.why = m.why
                else keep(st, m.data) end
                d.msg = nil
            else
                d.msg = m
            end
            pdu_state[key] = st
        end
        item:add(f.chunk_index, tvb(12, 4), st.index)
        if st.error then item:add_proto_expert_info(ex.malformed, "chunking violation: " .. st.error) end
        if is_end and st.frames then
            item:add(f.message_frames, tvb(16, 4), st.frames)
            if st.data then body_tvb = st.data:tvb("Reassembled message") else why = st.why end
        else
            summary = summary .. " [chunk " .. st.index .. "]"
        end
    end

    if body_tvb then
        local bt = item:add(f.body, body_tvb())
        bt:append_text(" (" .. body_tvb:len() .. " bytes)")
        local ok, res = pcall(decode_body, body_tvb, bt, mtype, flags)
        if ok then
            if res ~= "" then summary = summary .. " " .. res end
        else
            local msg = type(res) == "table" and res.gossip or tostring(res)
            bt:add_proto_expert_info(ex.malformed, msg)
            summary = summary .. " [malformed body]"
        end
    elseif why then
        -- A preference that kept the body from being decoded is a note; bad bytes are an error.
        local by_pref = why:find("switched off", 1, true) or why:find("preference", 1, true)
        item:add_proto_expert_info(by_pref and ex.zlib or ex.malformed, "body not decoded: " .. why)
    end
    add_info(pinfo, key, summary)
    return n
end

local function main_dissector(tvb, pinfo, tree)
    dissect_tcp_pdus(tvb, tree, 2, get_pdu_len, dissect_frame, true)
    return tvb:len()
end
gossip.dissector = main_dissector

-- Heuristic, on the bytes alone: a version-2 frame header (plausible length, version 2, and
-- with 8 bytes or more: no reserved flag bits, a known message type), or a segment that is
-- exactly a Noise handshake message 1 (`00 30` + 48 bytes) or 2 (`00 60` + 96 bytes). When it
-- matches, the server's port is claimed for the rest of the capture, so that the following
-- segments (continuations, Noise records) come here too.
local claimed = {}
local function heuristic(tvb, pinfo, tree)
    if not gossip.prefs.heuristic then return false end
    local n = tvb:len()
    if n < 5 then return false end
    local server_port
    local len = tvb(0, 4):le_uint()
    if len >= HEADER and len <= gossip.prefs.max_frame and tvb(4, 1):uint() == 2 then
        if n >= 8 then
            local fl, ty = tvb(5, 1):uint(), tvb(6, 2):le_uint()
            if band(fl, 0xC0) ~= 0 or type_names[ty] == nil then return false end
        end
        local reply = n >= 6 and band(tvb(5, 1):uint(), FLAG_R) ~= 0
        server_port = reply and pinfo.src_port or pinfo.dst_port
    elseif n == 50 and tvb(0, 2):uint() == 0x30 then
        server_port = pinfo.dst_port
    elseif n == 98 and tvb(0, 2):uint() == 0x60 then
        server_port = pinfo.src_port
    else
        return false
    end
    if not claimed[server_port] then
        claimed[server_port] = true
        DissectorTable.get("tcp.port"):add(server_port, gossip)
    end
    -- Called directly, not through the Proto's handle: a handle call would lower
    -- pinfo.can_desegment and TCP reassembly of the first frame would not happen.
    main_dissector(tvb, pinfo, tree)
    return true
end
gossip:register_heuristic("tcp", heuristic)

local registered_ports
function gossip.prefs_changed()
    local tcp_port = DissectorTable.get("tcp.port")
    if registered_ports then tcp_port:remove(registered_ports, gossip) end
    registered_ports = gossip.prefs.ports
    tcp_port:add(registered_ports, gossip)
end
DissectorTable.get("tcp.port"):add(gossip.prefs.ports, gossip)
registered_ports = gossip.prefs.ports
