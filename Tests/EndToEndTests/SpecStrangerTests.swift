// The stranger's check: tools/spec_peer.py, a client written from Protocol/SPEC.md alone (not
// from our sources), checks its codec against every golden vector, then starts the debug
// gossipd (a bootstrap and a peer on OS-picked ports), exchanges with it in F32, BF16 and I8
// (bit-identical averages on both sides, SPEC 5.3 and 6.5) and sends it hostile frames and
// bodies (SPEC 2, 4, 5, 7, 8.1, 9, 10). Skips with a message where python3 or numpy is missing.
import Foundation
import Testing

/// The python3 that has numpy ($PYTHON or python3 on PATH), or nil with the reason printed.
private func strangerPython() -> String? {
    let python = ProcessInfo.processInfo.environment["PYTHON"] ?? "/usr/bin/env"
    let args = python == "/usr/bin/env" ? ["python3", "-c", "import numpy"] : ["-c", "import numpy"]
    guard let (code, _, _) = try? Cluster.run(python, args, timeout: 60), code == 0 else {
        print("SpecStrangerTests: skipped: python3 with numpy is not available (\(python)); install numpy to run tools/spec_peer.py")
        return nil
    }
    return python
}

@Suite(.serialized)
struct SpecStrangerTests {
    /// tools/spec_peer.py against the debug binaries: it must print `spec_peer: OK` and exit 0;
    /// otherwise its last line names the first mismatch and the SPEC section.
    @Test func independentPeerAgreesWithTheNode() throws {
        guard let python = strangerPython() else { return }
        let script = Cluster.repoRoot + "/tools/spec_peer.py"
        var args = python == "/usr/bin/env" ? ["python3"] : []
        args += [script, "--bin", Cluster.binDir]
        let (code, out, err) = try Cluster.run(python, args, timeout: 120)
        print(out.trimmingCharacters(in: .whitespacesAndNewlines))
        #expect(code == 0 && out.contains("spec_peer: OK"),
                "tools/spec_peer.py exited \(code):\n\(out.suffix(3000))\n\(err.suffix(3000))")
    }
}
