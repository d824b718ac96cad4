using System.Diagnostics;
using System.Runtime.CompilerServices;
using Kmem.Locking;

namespace Kmem;

/// <summary>
/// Read-copy-update for .NET, after liburcu's membarrier flavour (urcu-memb): readers pay
/// no atomic instruction and no fence; a writer pays
/// <see cref="Interlocked.MemoryBarrierProcessWide"/> (membarrier) per grace period.
/// </summary>
/// <remarks>
/// <para>A reader brackets its use of shared pointers with <see cref="ReadLock"/> and
/// <see cref="ReadUnlock"/> (or <c>using (Rcu.Read())</c>); sections nest. Inside one it
/// loads published pointers with <see cref="Volatile.Read{T}(ref readonly T)"/>
/// (rcu_dereference) and must not wait for a grace period (<see cref="Synchronize"/>,
/// <see cref="Barrier"/>) nor take a lock that a thread may hold while waiting for one
/// (Kmem's slab_mutex and sheaf_drain: so no Create, Shrink or Dispose of a cache).</para>
/// <para>A writer unpublishes (Volatile.Write of a new pointer), then either waits with
/// <see cref="Synchronize"/> or queues the reclamation with <see cref="Call"/> or
/// <see cref="Kmalloc.FreeRcu"/>, which run on the "kmem-rcu" thread after a grace period,
/// in order, batched.</para>
/// <para>Why a reader needs no fence: its outermost ReadLock stores the grace-period number
/// into its own record with a plain (volatile) store. A writer starts grace period G, then
/// runs the process-wide barrier, which executes a full fence on every running thread. A
/// reader whose store the writer did not see after that barrier had not yet made it, so
/// every load of its section comes after the barrier and sees the writer's unpublishing;
/// a reader whose store the writer did see is waited for until its section ends. The
/// reader's ReadUnlock is a release store, so its section's loads and stores are done
/// before the writer sees it leave. The JIT does not move memory accesses across a
/// volatile access (the same rule the sheaves' Busy handshake relies on).</para>
/// <para>A thread that exits while registered, even inside a section, does not stall grace
/// periods: a writer that finds a reader lagging checks whether its thread is alive, and
/// drops it if not. A reader that blocks inside a section, however long, is waited for.</para>
/// </remarks>
public static unsafe partial class Rcu
{
    /// <summary>
    /// rcu_gp_lock: one grace period at a time. Taken by Synchronize with no lock held that a
    /// reader may take (it may hold slab_mutex or sheaf_drain: Shrink and Dispose of a
    /// TypesafeByRcu cache); under it only rcu_registry.
    /// </summary>
    private static readonly KLock s_gpLock = new("rcu_gp_lock");

    /// <summary>rcu_registry: the reader list's copy-on-write updates. A leaf.</summary>
    private static readonly LeafSpinLock s_registryLock = new("rcu_registry");

    /// <summary>Registered readers; replaced, never changed in place. Entries are removed (and their records freed) only under rcu_gp_lock.</summary>
    private static RcuReaderEntry[] s_readers = [];

    private static long s_gracePeriods;
    private static long s_sharedGracePeriods;
    private static long s_readerWaits;
    private static long s_exitedReaders;

    /// <summary>Full sweeps for exited threads, one every this many grace periods (lagging readers are checked at once).</summary>
    private const int SweepInterval = 64;

    /// <summary>The lock class the validator sees for read-side sections (lockdep's rcu_lock_map).</summary>
    private static readonly IValidatedLock s_readClass = new ReadSideClass();

    /// <summary>
    /// Begins a read-side section (rcu_read_lock). Nestable. Costs a thread-local load, a
    /// load of the grace-period number and one plain store: no atomic, no fence, no lock.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void ReadLock()
    {
        // Must not: take a lock, use an interlocked instruction or fence, allocate (but at
        // the thread's first section), or call anything on the common path.
        var r = (RcuReader*)RcuThread.Reader;
        if (r == null)
            r = RegisterCurrentThread();
        long c = r->Ctr;
        if ((c & RcuReader.NestMask) == 0)
        {
            Volatile.Write(ref r->Ctr, (Volatile.Read(ref RcuGracePeriod.Sequence) << RcuReader.NestBits) | 1);
            if (LockValidator.Enabled)
                LockValidator.Acquired(s_readClass);
        }
        else
        {
            Debug.Assert((c & RcuReader.NestMask) != RcuReader.NestMask, "read-side sections nested 65535 deep");
            r->Ctr = c + 1;   // nested: the writer looks only at "nest bits set" and the sequence
        }
    }

    /// <summary>Ends a read-side section (rcu_read_unlock).</summary>
    /// <exception cref="InvalidOperationException">No section is open on this thread.</exception>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void ReadUnlock()
    {
        // Must not: as ReadLock. The store is a release: the section's accesses are done
        // before a writer can see it end.
        var r = (RcuReader*)RcuThread.Reader;
        long c;
        if (r == null || ((c = r->Ctr) & RcuReader.NestMask) == 0)
        {
            ThrowUnbalanced();
            return;
        }
        Volatile.Write(ref r->Ctr, c - 1);
        if (LockValidator.Enabled && (c & RcuReader.NestMask) == 1)
            LockValidator.Released(s_readClass);
    }

    /// <summary>A read-side section for <c>using</c>: <c>using (Rcu.Read()) { ... }</c>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static RcuReadSection Read()
    {
        ReadLock();
        return default;
    }

    /// <summary>True inside a read-side section on this thread (rcu_read_lock_held).</summary>
    public static bool IsReading
    {
        get
        {
            var r = (RcuReader*)RcuThread.Reader;
            return r != null && RcuReader.InSection(r->Ctr);
        }
    }

    /// <summary>
    /// Waits until every read-side section that began before this call has ended
    /// (synchronize_rcu). Sections that begin meanwhile are not waited for. Concurrent
    /// callers share grace periods.
    /// </summary>
    /// <exception cref="InvalidOperationException">Called inside a read-side section (it would wait for itself).</exception>
    /// <exception cref="LockValidationException">(Validation on) called holding a leaf lock, inside a destructor, or holding a lock that readers were seen to take.</exception>
    public static void Synchronize()
    {
        CheckMayWait(nameof(Synchronize));
        long cookie = GetState();
        using (s_gpLock.Scope())
        {
            if (PollState(cookie))
            {
                // A grace period that began after our call has ended while we waited for the lock.
                s_sharedGracePeriods++;
                return;
            }
            RunGracePeriod();
        }
    }

    /// <summary>
    /// A cookie for <see cref="PollState"/> and <see cref="SynchronizeTo"/>
    /// (get_state_synchronize_rcu): the grace period that, once ended, covers every
    /// section that began before this call.
    /// </summary>
    public static long GetState()
    {
        // The full fence orders the caller's unpublishing before the read of the number:
        // any grace period numbered from the cookie on begins after both.
        Interlocked.MemoryBarrier();
        return Volatile.Read(ref RcuGracePeriod.Sequence) + 1;
    }

    /// <summary>True when a full grace period has passed since <see cref="GetState"/> gave <paramref name="cookie"/> (poll_state_synchronize_rcu).</summary>
    public static bool PollState(long cookie) => Volatile.Read(ref RcuGracePeriod.Completed) >= cookie;

    /// <summary>Waits for a grace period only if one has not already passed since <paramref name="cookie"/> (cond_synchronize_rcu).</summary>
    public static void SynchronizeTo(long cookie)
    {
        if (!PollState(cookie))
            Synchronize();
    }

    /// <summary>
    /// Grace periods, reader registrations and callbacks since the process started. Read
    /// without a lock, so it never waits (callable inside a read-side section); each count
    /// is exact, the counts together are a moment's, not one instant's.
    /// </summary>
    public static RcuStatistics GetStatistics() => new(
        GracePeriods: Volatile.Read(ref s_gracePeriods),
        SharedGracePeriods: Volatile.Read(ref s_sharedGracePeriods),
        ReaderWaits: Volatile.Read(ref s_readerWaits),
        ExitedReaders: Volatile.Read(ref s_exitedReaders),
        RegisteredReaders: Volatile.Read(ref s_readers).Length,
        CallbacksQueued: Volatile.Read(ref s_queued),
        CallbacksInvoked: Volatile.Read(ref s_invoked),
        CallbackBatches: Volatile.Read(ref s_batches),
        CallbackFailures: Volatile.Read(ref s_failures));

    /// <summary>One grace period. Caller holds rcu_gp_lock.</summary>
    private static void RunGracePeriod()
    {
        Debug.Assert(s_gpLock.IsHeldByCurrentThread, "rcu_gp_lock not held");
        long target = RcuGracePeriod.Sequence + 1;
        Volatile.Write(ref RcuGracePeriod.Sequence, target);
        // Every running thread executes a full fence: a reader's store of its Ctr is either
        // visible to the scan below, or its section's loads come after our unpublishing.
        Interlocked.MemoryBarrierProcessWide();
        s_gracePeriods++;
        RcuReaderEntry[] readers = Volatile.Read(ref s_readers);
        List<RcuReaderEntry>? exited = null;
        bool sweep = s_gracePeriods % SweepInterval == 0;
        foreach (RcuReaderEntry entry in readers)
        {
            long ctr = Volatile.Read(ref entry.Record->Ctr);
            bool lagging = RcuReader.InSection(ctr) && RcuReader.SequenceOf(ctr) < target;
            if (lagging && !WaitForReader(entry, target))
                (exited ??= []).Add(entry);
            else if (sweep && !lagging && !entry.Thread.IsAlive)
                (exited ??= []).Add(entry);
        }
        if (exited != null)
            Unregister(exited);
        Volatile.Write(ref RcuGracePeriod.Completed, target);
    }

    /// <summary>
    /// Waits until the reader leaves the section it began before grace period
    /// <paramref name="target"/>; false if its thread exited instead (it never will).
    /// Spins briefly, then sleeps a millisecond at a time.
    /// </summary>
    private static bool WaitForReader(RcuReaderEntry entry, long target)
    {
        s_readerWaits++;
        var wait = new SpinWait();
        while (true)
        {
            long ctr = Volatile.Read(ref entry.Record->Ctr);
            if (!RcuReader.InSection(ctr) || RcuReader.SequenceOf(ctr) >= target)
                return true;
            if (!wait.NextSpinWillYield)
            {
                wait.SpinOnce(sleep1Threshold: -1);   // a reader running on another CPU leaves within ns
                continue;
            }
            if (!entry.Thread.IsAlive)
                return false;
            // A reader preempted inside its section used up its time slice, so it is last in
            // its run queue: sleeping (not yielding, not spinning) leaves the CPUs to it.
            Thread.Sleep(1);
        }
    }

    /// <summary>Registers the calling thread as a reader: its first section.</summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    private static RcuReader* RegisterCurrentThread()
    {
        var r = (RcuReader*)System.Runtime.InteropServices.NativeMemory.AlignedAlloc((nuint)sizeof(RcuReader), 64);
        *r = default;
        var entry = new RcuReaderEntry(r, Thread.CurrentThread);
        using (s_registryLock.Scope())
        {
            RcuReaderEntry[] old = s_readers;
            var grown = new RcuReaderEntry[old.Length + 1];
            old.CopyTo(grown, 0);
            grown[^1] = entry;
            Volatile.Write(ref s_readers, grown);
        }
        RcuThread.Reader = (nint)r;
        return r;
    }

    /// <summary>Drops the readers of exited threads and frees their records. Caller holds rcu_gp_lock, so no scan is using them.</summary>
    private static void Unregister(List<RcuReaderEntry> exited)
    {
        using (s_registryLock.Scope())
            Volatile.Write(ref s_readers, s_readers.Where(e => !exited.Contains(e)).ToArray());
        foreach (RcuReaderEntry e in exited)
            System.Runtime.InteropServices.NativeMemory.AlignedFree(e.Record);
        s_exitedReaders += exited.Count;
    }

    /// <summary>The rules for waiting for a grace period, checked before it is waited for.</summary>
    private static void CheckMayWait(string what)
    {
        if (IsReading)
            throw new InvalidOperationException($"Rcu.{what} called inside a read-side section: it would wait for that section, which cannot end");
        // As lockdep does for synchronize_rcu: waiting for readers is taking the read-side
        // "lock" exclusively, so a lock held here that readers take is an inversion, and a
        // leaf lock or a destructor's leaf-only region refuses it.
        if (LockValidator.Enabled)
            LockValidator.BeforeAcquire(s_readClass, tryLock: false);
    }

    [System.Diagnostics.CodeAnalysis.DoesNotReturn]
    private static void ThrowUnbalanced() =>
        throw new InvalidOperationException("Rcu.ReadUnlock without a matching ReadLock on this thread");

    private sealed class ReadSideClass : IValidatedLock
    {
        public string ClassName => "rcu_read_lock";

        public bool IsLeaf => false;
    }
}

/// <summary>An open read-side section; <see cref="Dispose"/> ends it. From <see cref="Rcu.Read"/>.</summary>
public readonly ref struct RcuReadSection
{
    /// <summary>Ends the section (<see cref="Rcu.ReadUnlock"/>), on the thread that began it; sections nest.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    [System.Diagnostics.CodeAnalysis.SuppressMessage("Performance", "CA1822:Mark members as static",
        Justification = "using (Rcu.Read()) needs an instance Dispose; the section's state is the thread's, so the struct is empty.")]
    public void Dispose() => Rcu.ReadUnlock();
}
