using System.Diagnostics;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace Kmem.Sheaves;

/// <summary>
/// One thread's array of free objects for one cache (the kernel's per-CPU sheaf): a
/// header and <see cref="Capacity"/> object pointers inline after it, in one
/// cache-line-aligned native block. Its owner (the thread whose slot id indexes it)
/// touches it with plain loads and stores inside <see cref="TryEnter"/>/<see cref="Exit"/>;
/// a drainer (<see cref="SheafTable"/>) takes its objects with the handshake below.
/// </summary>
/// <remarks>
/// <para>The handshake (docs/design.md, "Remote draining", argues it access by access):</para>
/// <list type="number">
/// <item>owner O1: <c>Busy = 1</c> (volatile store: the JIT keeps it before O2);</item>
/// <item>owner O2: read <see cref="State"/> (volatile, acquire: O3 cannot be done before it);
/// not <see cref="StateOpen"/>: <c>Busy = 0</c>, back off;</item>
/// <item>owner O3: read and write <see cref="Count"/> and the objects;</item>
/// <item>owner O4: <c>Busy = 0</c> (volatile, release: O3 is visible before it).</item>
/// </list>
/// <list type="number">
/// <item>drainer D1: <c>State = Draining</c> (or <see cref="StateDead"/>) on every sheaf;</item>
/// <item>drainer D2: <c>Interlocked.MemoryBarrierProcessWide()</c>;</item>
/// <item>drainer D3: wait until it reads <c>Busy == 0</c> (acquire);</item>
/// <item>drainer D4: take <see cref="Count"/> objects, <c>Count = 0</c>;</item>
/// <item>drainer D5: <c>State = Open</c> (release), unless dead.</item>
/// </list>
/// D2 runs a full barrier on every CPU running an owner, so an owner's O1 and O2 fall on
/// one side of it: O1 before it is visible to D3 (the drainer waits); O2 after it reads
/// D1 (the owner backs off). O3 never reads a Count from before the drain: the old code
/// read Count between O1 and O2, where a whole drain fits.
/// Invariant: Busy is 1 only between O1 and O4, never while the owner waits for anything
/// but barn_lock or list_lock (which no drainer holds while it waits in D3).
/// </remarks>
[StructLayout(LayoutKind.Sequential)]
internal unsafe struct Sheaf
{
    /// <summary>1 while the owner is between TryEnter and Exit; written only by the owner.</summary>
    public int Busy;
    /// <summary><see cref="StateOpen"/>, <see cref="StateDraining"/> or <see cref="StateDead"/>; written only by drainers (under sheaf_drain).</summary>
    public int State;
    /// <summary>Objects held: 0 ≤ Count ≤ Capacity. Owner's inside TryEnter/Exit, else the drainer's after D3.</summary>
    public int Count;
    /// <summary>Fixed at creation.</summary>
    public int Capacity;
    /// <summary>Always null: the slot before <see cref="Objects"/>[0], so "is obj on top?" needs no Count == 0 test.</summary>
    public void* Sentinel;

    public const int StateOpen = 0;
    /// <summary>A drainer owns the objects until it sets the state back to open.</summary>
    public const int StateDraining = 1;
    /// <summary>The cache is disposed: the sheaf stays empty until its owner frees it (<see cref="ThreadSlot"/>).</summary>
    public const int StateDead = 2;

    private const int HeaderBytes = 24;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void** Objects(Sheaf* s) => (void**)((byte*)s + HeaderBytes);

    /// <summary>
    /// Owner, O1 and O2: true when the owner may use the sheaf (Busy is then 1 until
    /// <see cref="Exit"/>); false when a drain is in progress or the cache is gone (Busy is 0).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static bool TryEnter(Sheaf* s)
    {
        // O1: a volatile store, a plain mov on x64. RyuJIT does not move a volatile load
        // above a volatile store; the CPU may (store buffer), which D2 rules out.
        Volatile.Write(ref s->Busy, 1);
        // O2: acquire, so that O3's loads of Count and the objects come after it.
        if (Volatile.Read(ref s->State) == StateOpen)
            return true;
        Volatile.Write(ref s->Busy, 0);
        return false;
    }

    /// <summary>Owner, O4: release; everything done since <see cref="TryEnter"/> is visible first.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Exit(Sheaf* s) => Volatile.Write(ref s->Busy, 0);

    /// <summary>
    /// Owner, slow paths: enters, waiting out a drain in progress (with Busy 0, so the
    /// drainer is never waited on while it waits for us). False when the cache is disposed.
    /// </summary>
    public static bool EnterWaiting(Sheaf* s)
    {
        var wait = new SpinWait();
        while (!TryEnter(s))
        {
            if (Volatile.Read(ref s->State) == StateDead)
                return false;
            wait.SpinOnce();
        }
        return true;
    }

    public static Sheaf* Create(int capacity)
    {
        Debug.Assert(sizeof(Sheaf) == HeaderBytes, "header size changed");
        nuint bytes = (nuint)(HeaderBytes + capacity * sizeof(void*));
        bytes = (bytes + 63) & ~(nuint)63;   // whole cache lines: no false sharing between owners
        var s = (Sheaf*)NativeMemory.AlignedAlloc(bytes, 64);
        NativeMemory.Clear(s, bytes);
        s->Capacity = capacity;
        return s;
    }

    public static void Destroy(Sheaf* s) => NativeMemory.AlignedFree(s);

    /// <summary>
    /// Per-thread sheaf capacity for an object size: up to 128 objects or about 16 KiB of
    /// them, at least 4, so that idle threads of a cache of big objects park little.
    /// </summary>
    public static int CapacityFor(int stride) => Math.Clamp(16384 / stride, 4, 128);
}
