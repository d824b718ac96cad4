using System.Diagnostics;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace Kmem.Sheaves;

/// <summary>
/// One thread's array of free objects for one cache (the kernel's per-CPU sheaf):
/// a header and <see cref="Capacity"/> object pointers inline after it, in one
/// cache-line-aligned native block. The owner touches it with plain loads and stores.
/// </summary>
/// <remarks>
/// The asymmetric handshake that lets Shrink/Dispose take objects from a sheaf whose
/// owner is idle or dead, without an atomic on the owner's side:
/// <list type="bullet">
/// <item>owner: <c>Busy = 1</c>, then reads <see cref="DrainRequested"/>; if it is set
/// the owner backs off (<c>Busy = 0</c>) to the slow path; otherwise it uses the
/// objects and ends with <c>Busy = 0</c> (release).</item>
/// <item>drainer: sets <see cref="DrainRequested"/>, runs
/// <c>Interlocked.MemoryBarrierProcessWide()</c>, then waits for <c>Busy == 0</c> and
/// owns the objects until it clears the request.</item>
/// </list>
/// The process-wide barrier orders the owner's store of Busy before its load of
/// DrainRequested, so either the drainer sees Busy = 1 and waits, or the owner sees the
/// request and backs off. The owner's store of Busy is a volatile write: a plain store
/// could legally be moved by the JIT after the DrainRequested read, where no barrier
/// could order it. Invariant: Busy is never 1 while the owner waits for anything.
/// </remarks>
[StructLayout(LayoutKind.Sequential)]
internal unsafe struct Sheaf
{
    public int Busy;
    public int DrainRequested;
    public int Count;
    public int Capacity;

    private const int HeaderBytes = 16;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void** Objects(Sheaf* s) => (void**)((byte*)s + HeaderBytes);

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
