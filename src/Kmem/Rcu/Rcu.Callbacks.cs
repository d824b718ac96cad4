using Kmem.Locking;

namespace Kmem;

/// <summary>
/// call_rcu and rcu_barrier: callbacks queued in order, run on the "kmem-rcu" thread in
/// batches, each batch after a grace period that began after its last callback was queued.
/// </summary>
public static partial class Rcu
{
    /// <summary>rcu_callbacks: the queue. A leaf; nothing is called while it is held.</summary>
    private static readonly LeafSpinLock s_queueLock = new("rcu_callbacks");
    private static List<RcuWork> s_queue = [];
    /// <summary>The list the next batch is swapped with; the callback thread's alone.</summary>
    private static List<RcuWork> s_spare = [];
    private static long s_queued;
    private static long s_invoked;
    private static long s_batches;
    private static long s_failures;
    private static Exception? s_lastFailure;

    // The thread and its sleep handshake: it sets Sleeping, then checks the queue under
    // rcu_callbacks, then waits; a producer adds under rcu_callbacks, then reads Sleeping.
    // The lock's acquisitions order the two, so a callback is never left with the thread asleep.
    private static readonly AutoResetEvent s_wake = new(false);
    private static int s_sleeping;
    private static Thread? s_thread;
    private static readonly Lock s_startGate = new();

    /// <summary>The last exception a callback threw (callbacks are caught, counted and recorded here).</summary>
    public static Exception? LastFailure => Volatile.Read(ref s_lastFailure);

    /// <summary>True on the thread that runs callbacks.</summary>
    public static bool IsCallbackThread => Thread.CurrentThread == s_thread;

    /// <summary>
    /// Runs <paramref name="callback"/> on the callback thread after a grace period
    /// (call_rcu): after every read-side section that began before this call has ended.
    /// Callbacks run in the order they were queued. Never waits; may be called inside a
    /// read-side section and from a callback.
    /// </summary>
    public static void Call(Action callback)
    {
        ArgumentNullException.ThrowIfNull(callback);
        Enqueue(new RcuWork(callback));
    }

    /// <summary>
    /// Waits until every callback queued before this call (and every <see cref="Kmalloc.FreeRcu"/>) has run (rcu_barrier).
    /// Returns at once when none is pending.
    /// </summary>
    /// <exception cref="InvalidOperationException">Called from a callback, or inside a read-side section: either would wait for itself.</exception>
    public static void Barrier()
    {
        if (IsCallbackThread)
            throw new InvalidOperationException("Rcu.Barrier called from an RCU callback: it would wait for the callback thread, which is running it");
        CheckMayWait(nameof(Barrier));
        if (Volatile.Read(ref s_invoked) == Volatile.Read(ref s_queued))
            return;
        using var done = new ManualResetEventSlim(false);
        Enqueue(new RcuWork(done.Set));
        done.Wait();
    }

    /// <summary>Callbacks queued and not yet run.</summary>
    internal static long PendingCallbacks => Volatile.Read(ref s_queued) - Volatile.Read(ref s_invoked);

    internal static void Enqueue(RcuWork work)
    {
        EnsureStarted();
        using (s_queueLock.Scope())
        {
            s_queue.Add(work);
            s_queued++;
        }
        if (Volatile.Read(ref s_sleeping) != 0 && Interlocked.Exchange(ref s_sleeping, 0) != 0)
            s_wake.Set();
    }

    private static void EnsureStarted()
    {
        if (Volatile.Read(ref s_thread) != null)
            return;
        lock (s_startGate)
        {
            if (s_thread != null)
                return;
            var t = new Thread(CallbackLoop) { IsBackground = true, Name = "kmem-rcu" };
            Volatile.Write(ref s_thread, t);
            t.Start();
        }
    }

    private static void CallbackLoop()
    {
        // Callbacks run in order, so a stuck one holds up every later one: the watchdog reports it.
        var watch = new Diagnostics.CallbackWatch(Thread.CurrentThread, "the RCU callback thread")
        {
            OnStall = _ => "every callback queued after it waits (they run in order, as call_rcu's do), and so does Rcu.Barrier",
        };
        Diagnostics.CallbackWatch.t_current = watch;
        Diagnostics.Watchdog.Watch(watch);
        while (true)
        {
            List<RcuWork>? batch = null;
            using (s_queueLock.Scope())
            {
                if (s_queue.Count != 0)
                {
                    batch = s_queue;
                    s_queue = s_spare;
                }
            }
            if (batch == null)
            {
                Sleep();
                continue;
            }
            // Every callback of the batch was queued before this grace period began.
            Synchronize();
            foreach (RcuWork work in batch)
                Invoke(work, watch);
            Interlocked.Increment(ref s_batches);
            batch.Clear();
            s_spare = batch;
        }
    }

    private static void Sleep()
    {
        Volatile.Write(ref s_sleeping, 1);
        bool empty;
        using (s_queueLock.Scope())
            empty = s_queue.Count == 0;
        if (empty)
            s_wake.WaitOne();
        else
            Volatile.Write(ref s_sleeping, 0);
    }

    private static unsafe void Invoke(RcuWork work, Diagnostics.CallbackWatch watch)
    {
        watch.Enter(Diagnostics.CallbackKind.RcuCallback, (object?)work.Action ?? "a Kmalloc.FreeRcu free", null, work.Action == null ? work.Argument : 0, 0, "");
        try
        {
            if (work.Action != null)
                work.Action();
            else
                work.Function(work.Argument);
        }
        catch (Exception e)
        {
            Interlocked.Increment(ref s_failures);
            Volatile.Write(ref s_lastFailure, e);
        }
        finally
        {
            watch.Exit();
            // After the callback: Barrier's "none pending" test must not pass while one runs.
            Interlocked.Increment(ref s_invoked);
        }
    }
}
