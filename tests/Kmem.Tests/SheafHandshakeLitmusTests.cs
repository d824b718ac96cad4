using Kmem.Sheaves;

namespace Kmem.Tests;

/// <summary>
/// A litmus test of the sheaf handshake (Sheaves/Sheaf.cs, docs/design.md "Remote
/// draining"): an owner thread and a drainer race for one object in a sheaf, iteration
/// by iteration, starting together; the object must never be taken by both. The real
/// protocol is run, and so are two known-buggy controls in the same harness, which must
/// be caught: the drainer without its process-wide barrier (the store-buffer reordering
/// of Busy = 1 past the State read), and the owner reading Count before its Busy store
/// (the order the fast paths had before issue 12).
/// </summary>
[Collection(nameof(GlobalStateCollection))]
public unsafe class SheafHandshakeLitmusTests
{
    private enum Protocol { Real, DrainerWithoutBarrier, OwnerReadsCountFirst }

    [Fact]
    public void The_real_handshake_never_gives_one_object_to_owner_and_drainer()
    {
        Result r = Run(Protocol.Real, iterations: 60_000, stopAfter: int.MaxValue);
        Assert.Equal(0, r.Violations);
        // Both sides won the object often: the race was real, not one side always first.
        Assert.True(r.OwnerTook > 1000 && r.DrainerTook > 1000, $"owner took {r.OwnerTook}, drainer {r.DrainerTook}");
    }

    [Fact]
    public void Without_the_process_wide_barrier_the_same_test_catches_a_double_take()
    {
        Result r = Run(Protocol.DrainerWithoutBarrier, iterations: 2_000_000, stopAfter: 3);
        Assert.True(r.Violations > 0, $"no violation in {r.Iterations} iterations: the litmus cannot see the store-buffer reordering");
    }

    [Fact]
    public void With_the_old_read_order_the_same_test_catches_a_double_take()
    {
        Result r = Run(Protocol.OwnerReadsCountFirst, iterations: 200_000, stopAfter: 3);
        Assert.True(r.Violations > 0, $"no violation in {r.Iterations} iterations: the litmus cannot see a drain between the Count read and the State read");
    }

    private readonly record struct Result(int Iterations, int Violations, int OwnerTook, int DrainerTook);

    private static Result Run(Protocol protocol, int iterations, int stopAfter)
    {
        var table = new SheafTable(capacity: 4);
        Sheaf* sheaf = null;
        var gate = new LitmusGate();
        int ownerTook = 0, drainerTook = 0, violations = 0, done = 0;
        bool ownerGot = false, drainerGot = false;
        var stop = false;

        var owner = new Thread(() =>
        {
            sheaf = table.OfCurrentThread();
            var rng = new Random(1);
            gate.Arrive();                                  // sheaf published
            for (int i = 0; ; i++)
            {
                gate.Arrive();                              // start together
                if (Volatile.Read(ref stop))
                    return;
                // Skew the owner's start so that every interleaving comes up: widely against
                // the slow real drainer, barely against the barrier-less one (a store-buffer
                // reordering needs both sides within a few nanoseconds).
                if (protocol == Protocol.OwnerReadsCountFirst)
                    ownerGot = OwnerOldOrder(sheaf, rng.Next(3000));
                else
                {
                    LitmusGate.Spin(rng.Next(protocol == Protocol.Real ? 40 : 3));
                    ownerGot = OwnerReal(sheaf);
                }
                gate.Arrive();                              // both done
                if (ownerGot && drainerGot)
                    violations++;
                ownerTook += ownerGot ? 1 : 0;
                drainerTook += drainerGot ? 1 : 0;
                sheaf->Count = 1;                           // one object for the next round
                done = i + 1;
                if (done >= iterations || violations >= stopAfter)
                    Volatile.Write(ref stop, true);
            }
        });
        var drainer = new Thread(() =>
        {
            gate.Arrive();
            while (true)
            {
                gate.Arrive();
                if (Volatile.Read(ref stop))
                    return;
                drainerGot = protocol == Protocol.DrainerWithoutBarrier ? DrainNoBarrier(sheaf) : DrainReal(table);
                gate.Arrive();
            }
        });
        owner.Start();
        drainer.Start();
        Assert.True(owner.Join(TimeSpan.FromMinutes(2)) && drainer.Join(TimeSpan.FromMinutes(2)), "litmus threads hung");
        return new Result(done, violations, ownerTook, drainerTook);
    }

    /// <summary>The fast path's order: TryEnter (Busy store, State load), then Count.</summary>
    private static bool OwnerReal(Sheaf* s)
    {
        if (!Sheaf.TryEnter(s))
            return false;
        bool got = s->Count > 0;
        if (got)
            s->Count--;
        Sheaf.Exit(s);
        return got;
    }

    /// <summary>Control: Count read before the Busy store (the bug), with time for a whole drain in between.</summary>
    private static bool OwnerOldOrder(Sheaf* s, int delay)
    {
        int n = Volatile.Read(ref s->Count);
        LitmusGate.Spin(delay);
        Volatile.Write(ref s->Busy, 1);
        bool got = n > 0 && Volatile.Read(ref s->State) == Sheaf.StateOpen;
        if (got)
            s->Count = n - 1;
        Volatile.Write(ref s->Busy, 0);
        return got;
    }

    /// <summary>The drainer as Shrink runs it: BeginDrain (State, barrier), WaitIdle, take, EndDrain.</summary>
    private static bool DrainReal(SheafTable table)
    {
        var asked = table.BeginDrain(kill: false);
        var s = (Sheaf*)asked[0].Sheaf;
        SheafTable.WaitIdle(s);
        bool got = s->Count > 0;
        s->Count = 0;
        SheafTable.EndDrain(s);
        return got;
    }

    /// <summary>Control: the same drainer with the process-wide barrier left out.</summary>
    private static bool DrainNoBarrier(Sheaf* s)
    {
        Volatile.Write(ref s->State, Sheaf.StateDraining);
        SheafTable.WaitIdle(s);
        bool got = s->Count > 0;
        s->Count = 0;
        SheafTable.EndDrain(s);
        return got;
    }
}
