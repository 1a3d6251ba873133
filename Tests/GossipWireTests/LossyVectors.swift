// Golden vectors of the lossy wire encodings (SPEC §6.1, §6.5): the GossipExchange request of
// `gossip_exchange_request.hex` with its weights as F16, BF16 and I8. Their data bytes follow
// from the conversions of §6.1 alone, so an outside implementation can check its encoder.
import Foundation
@testable import GossipWire

extension Fixtures {
    /// The model of `model()` with its weights encoded as `dtype` (decoded back from the
    /// encoder's bytes, so `data` holds the wire bytes).
    static func lossyModel(_ dtype: DType) -> ModelState {
        let wire = table.encoded(as: dtype)
        let payload = try! weights.withUnsafeBufferPointer { f in
            try GossipExchangeRequest.encode(sender: "127.0.0.1:7001", weight: 600, architecture: "3,2", round: 3, step: 120,
                                             samples: 7680, wire: wire, floats: f)
        }
        return try! GossipExchangeRequest.decode(payload).model
    }

    static let lossySpecs: [VectorSpec] = [
        VectorSpec(name: "gossip_exchange_request_bf16", comment: "GossipExchange request as gossip_exchange_request.hex with the weights as BF16 (dtype 3, SPEC 6.1/6.5); schema hash unchanged (it names F32); no checksum", body: .gossipExchangeRequest(GossipExchangeRequest(sender: "127.0.0.1:7001", weight: 600, model: lossyModel(.bfloat16))), requestID: 3, checksum: false),
        VectorSpec(name: "gossip_exchange_request_fp16", comment: "GossipExchange request as gossip_exchange_request.hex with the weights as F16 (dtype 2, IEEE binary16, SPEC 6.1/6.5); no checksum", body: .gossipExchangeRequest(GossipExchangeRequest(sender: "127.0.0.1:7001", weight: 600, model: lossyModel(.float16))), requestID: 3, checksum: false),
        VectorSpec(name: "gossip_exchange_request_int8", comment: "GossipExchange request as gossip_exchange_request.hex with the weights as I8 (dtype 4): per tensor one block, f32 scale = maxabs/127 then the int8 values (SPEC 6.1/6.5); no checksum", body: .gossipExchangeRequest(GossipExchangeRequest(sender: "127.0.0.1:7001", weight: 600, model: lossyModel(.int8))), requestID: 3, checksum: false),
    ]
}
