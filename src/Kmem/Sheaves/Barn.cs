using System.Diagnostics;
using System.Runtime.InteropServices;
using Kmem.Locking;

namespace Kmem.Sheaves;

/// <summary>
/// A cache's store of full sheaves (the kernel's barn): a thread whose sheaf ran dry
/// takes a whole sheaf of objects here, a thread whose sheaf filled up leaves one, so
/// objects move between threads (producer/consumer) a sheaf at a time under one lock
/// instead of one object at a time.
/// </summary>
/// <remarks>
/// Sheaves are copied in and out rather than swapped by pointer: a per-thread sheaf
/// keeps its storage inline for the fast path, and copying 1 KiB under the lock costs
/// less than the extra dependent load a pointer swap would add to every alloc.
/// Everything here is under <see cref="Lock"/> (class barn_lock).
/// </remarks>
internal sealed unsafe class Barn : IDisposable
{
    private readonly int _sheafCapacity;
    private readonly int _maxFull;
    private readonly void** _slots;
    private int _full;
    /// <summary>Full sheaves taken (SLUB_STATS' barn_get), counted by the holder: no atomic.</summary>
    private long _gets;
    /// <summary>Full sheaves left here (barn_put), counted by the holder.</summary>
    private long _puts;

    public Barn(int sheafCapacity, int stride)
    {
        _sheafCapacity = sheafCapacity;
        // Up to ~256 KiB of objects parked, at least two sheaves so a producer and a
        // consumer can always trade.
        _maxFull = Math.Clamp(256 * 1024 / (sheafCapacity * stride), 2, 16);
        _slots = (void**)NativeMemory.Alloc((nuint)(_maxFull * sheafCapacity), (nuint)sizeof(void*));
        Lock = new KLock("barn_lock");
    }

    public KLock Lock { get; }

    /// <summary>Objects parked here now (racy read for statistics).</summary>
    public int Objects => Volatile.Read(ref _full) * _sheafCapacity;

    /// <summary>Full sheaves taken by threads whose sheaf ran dry (racy read for statistics).</summary>
    public long Gets => Volatile.Read(ref _gets);

    /// <summary>Full sheaves left by threads whose sheaf filled up (racy read for statistics).</summary>
    public long Puts => Volatile.Read(ref _puts);

    /// <summary>Moves one full sheaf of objects into <paramref name="sheaf"/>, which must be empty.</summary>
    public bool TryTakeFull(Sheaf* sheaf)
    {
        Debug.Assert(Lock.IsHeldByCurrentThread && sheaf->Count == 0, "barn_lock not held or sheaf not empty");
        if (_full == 0)
            return false;
        _full--;
        Buffer.MemoryCopy(_slots + _full * _sheafCapacity, Sheaf.Objects(sheaf), _sheafCapacity * sizeof(void*), _sheafCapacity * sizeof(void*));
        sheaf->Count = _sheafCapacity;
        _gets++;
        return true;
    }

    /// <summary>Moves every object of a full <paramref name="sheaf"/> here, if there is room.</summary>
    public bool TryPutFull(Sheaf* sheaf)
    {
        Debug.Assert(Lock.IsHeldByCurrentThread && sheaf->Count == _sheafCapacity, "barn_lock not held or sheaf not full");
        if (_full == _maxFull)
            return false;
        Buffer.MemoryCopy(Sheaf.Objects(sheaf), _slots + _full * _sheafCapacity, _sheafCapacity * sizeof(void*), _sheafCapacity * sizeof(void*));
        _full++;
        _puts++;
        sheaf->Count = 0;
        return true;
    }

    /// <summary>The parked objects, for a drainer holding the lock; follow with <see cref="Clear"/>.</summary>
    public void** Parked(out int count)
    {
        Debug.Assert(Lock.IsHeldByCurrentThread, "barn_lock not held");
        count = _full * _sheafCapacity;
        return _slots;
    }

    public void Clear()
    {
        Debug.Assert(Lock.IsHeldByCurrentThread, "barn_lock not held");
        _full = 0;
    }

    public void Dispose() => NativeMemory.Free(_slots);
}
