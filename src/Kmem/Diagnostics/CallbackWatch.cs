using System.Runtime.CompilerServices;

namespace Kmem.Diagnostics;

/// <summary>What a watched thread is calling into: user code Kmem runs on its own threads.</summary>
internal enum CallbackKind
{
    /// <summary>A cache's destructor (or batch destructor), freeing a slab.</summary>
    Destructor,
    /// <summary>An <see cref="IShrinker"/>'s CountObjects or ScanObjects.</summary>
    Shrinker,
    /// <summary>An <see cref="Rcu.Call(Action)"/> callback.</summary>
    RcuCallback,
}

/// <summary>
/// The record a Kmem thread (a reclaim worker, the RCU callback thread) keeps of the user
/// callback it is running, for the <see cref="Watchdog"/>: the kernel's soft-lockup
/// detector reads a per-CPU "touched" timestamp the same way.
/// </summary>
/// <remarks>
/// A sequence lock with one writer, the watched thread: <see cref="Enter"/> writes the
/// fields (release stores, so none is seen before the previous <see cref="Exit"/>), then
/// bumps <c>_progress</c> to odd (a release store); <see cref="Exit"/> bumps it to even. The watchdog reads <c>_progress</c> (acquire), the fields, a full fence, and
/// <c>_progress</c> again: equal and odd means the fields belong to the call in progress.
/// A callback that makes no progress leaves <c>_progress</c> unchanged, which is all a
/// stall is; the watchdog times it from the first tick that saw the value. Cost on the
/// watched thread: a few plain stores per callback (x64 release stores are plain).
/// </remarks>
internal sealed class CallbackWatch(Thread thread, string role)
{
    /// <summary>The watch of the current thread, if Kmem watches it (its reclaim workers and RCU thread).</summary>
    [ThreadStatic] internal static CallbackWatch? t_current;

    /// <summary>The watched thread.</summary>
    public Thread Thread { get; } = thread;

    /// <summary>What the thread is, for reports ("reclaim worker 2", "RCU callback thread").</summary>
    public string Role { get; } = role;

    /// <summary>Run by the watchdog (on its thread) when this thread stalls; returns what it did about it, for the report. Null: nothing.</summary>
    public Func<CallbackWatch, string>? OnStall { get; init; }

    // Written by the watched thread only (see remarks).
    private long _progress;               // odd while inside a callback
    private int _depth;                   // nested Enters (a shrinker that calls Shrink, whose destructors run inside it)
    private int _kind;                    // a CallbackKind
    private object _target = "";          // the cache or shrinker name, or the callback (a delegate, named by the watchdog)
    private SlabCacheCore? _cache;        // for a destructor: the cache whose stall count to bump
    private nint _object;                 // the object being destructed (the first, for a batch)
    private int _count;                   // objects in the call (a batch destructor's span)
    private string _holding = "";         // locks the thread holds across the call

    // The watchdog's own (its thread only).
    internal long SeenProgress;
    internal long SeenSinceTicks;
    internal long ReportedProgress = -1;

    /// <summary>A callback begins.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void Enter(CallbackKind kind, object target, SlabCacheCore? cache, nint obj, int count, string holding)
    {
        // Nested calls belong to the outer one: its parity and its description stay, so a
        // stall anywhere inside is the outer call's stall.
        if (_depth++ != 0)
            return;
        // Release stores (plain on x64): none may become visible before the previous Exit's.
        Volatile.Write(ref _kind, (int)kind);
        Volatile.Write(ref _target, target);
        Volatile.Write(ref _cache, cache);
        Volatile.Write(ref _object, obj);
        Volatile.Write(ref _count, count);
        Volatile.Write(ref _holding, holding);
        Volatile.Write(ref _progress, _progress + 1);
    }

    /// <summary>The callback entered last has returned (or thrown).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void Exit()
    {
        if (--_depth == 0)
            Volatile.Write(ref _progress, _progress + 1);
    }

    /// <summary>The watchdog's read: the progress value now.</summary>
    internal long Progress => Volatile.Read(ref _progress);

    /// <summary>
    /// The watchdog's consistent read of the call in progress; false if it ended meanwhile.
    /// <paramref name="recheck"/> false skips the second read of the progress: the litmus
    /// test's known-buggy control, never the watchdog's.
    /// </summary>
    internal bool TryReadCall(long progress, out StalledCall call, bool recheck = true)
    {
        var kind = (CallbackKind)_kind;
        object target = _target;
        SlabCacheCore? cache = _cache;
        nint obj = _object;
        int count = _count;
        string holding = _holding;
        Interlocked.MemoryBarrier();
        if ((progress & 1) == 0 || (recheck && Volatile.Read(ref _progress) != progress))
        {
            call = default;
            return false;
        }
        string name = target is Delegate d ? $"{d.Method.DeclaringType?.FullName}.{d.Method.Name}" : target.ToString() ?? "";
        call = new StalledCall(kind, name, cache, obj, count, holding);
        return true;
    }
}

/// <summary>The call a watched thread is stuck in, as the watchdog read it.</summary>
internal readonly record struct StalledCall(CallbackKind Kind, string Target, SlabCacheCore? Cache, nint Object, int Count, string Holding);
