using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace Kmem.Workloads;

/// <summary>
/// The floor: a bare thread-local free list, pop and push with plain loads and stores.
/// No allocator can do less per alloc/free pair; it is what DESIGN.md's ratios divide by.
/// </summary>
public static unsafe class BareFreeList
{
    [ThreadStatic] private static void* t_head;

    /// <summary>Seeds this thread's list once.</summary>
    public static void EnsureSeeded(int count, int size)
    {
        if (t_head == null)
            Seed(count, size);
    }

    public static void Seed(int count, int size)
    {
        for (int i = 0; i < count; i++)
            Push(NativeMemory.Alloc((nuint)size));
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void* Pop()
    {
        void* p = t_head;
        t_head = *(void**)p;
        return p;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Push(void* p)
    {
        *(void**)p = t_head;
        t_head = p;
    }
}

/// <summary>A free list shared by all threads, guarded by compare-and-swap (a Treiber stack).</summary>
public sealed unsafe class CasFreeList
{
    private nint _head;

    public CasFreeList(int count, int size)
    {
        for (int i = 0; i < count; i++)
            Push(NativeMemory.Alloc((nuint)size));
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void* Pop()
    {
        while (true)
        {
            nint head = Volatile.Read(ref _head);
            nint next = *(nint*)head;
            if (Interlocked.CompareExchange(ref _head, next, head) == head)
                return (void*)head;
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void Push(void* p)
    {
        while (true)
        {
            nint head = Volatile.Read(ref _head);
            *(nint*)p = head;
            if (Interlocked.CompareExchange(ref _head, (nint)p, head) == head)
                return;
        }
    }
}

/// <summary>A 64-byte managed object for the object pool peer.</summary>
public sealed class Payload64
{
    public long A, B, C, D, E, F;
}
