using System.Diagnostics;
using System.Runtime.CompilerServices;

namespace Kmem;

/// <summary>
/// A per-CPU area (the kernel's <c>T __percpu *</c>): one <typeparamref name="T"/> per
/// possible CPU, reached as <see cref="Local"/> (this CPU's), <c>this[cpu]</c>, or by
/// iterating over every CPU. Unmanaged and one pointer wide, so an object in slab
/// memory can hold it.
/// </summary>
/// <remarks>
/// It holds the address of CPU 0's copy; CPU <c>c</c>'s copy lies <c>c</c> units further
/// (every chunk of every allocator has the same unit size, as the kernel's
/// <c>pcpu_unit_offsets</c> make the copies a fixed distance apart). The thread may move
/// to another CPU at any moment, so writes through <see cref="Local"/> must be atomic
/// (<see cref="Interlocked"/>) unless a lost update is acceptable. Using an area after
/// <see cref="PerCpuAllocator.Free{T}"/> is the caller's bug, as with any pointer.
/// </remarks>
public readonly unsafe struct PerCpuPtr<T> : IEquatable<PerCpuPtr<T>>
    where T : unmanaged
{
    private readonly nint _unit0;

    internal PerCpuPtr(nint unit0) => _unit0 = unit0;

    /// <summary>The null area (default).</summary>
    public bool IsNull => _unit0 == 0;

    /// <summary>Address of CPU 0's copy: the area's identity, as the kernel's __percpu pointer.</summary>
    public nint Address => _unit0;

    /// <summary>The copy of the CPU the calling thread runs on now.</summary>
    public ref T Local
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        get
        {
            Debug.Assert(_unit0 != 0, "dereferencing a null per-CPU pointer");
            return ref *(T*)(_unit0 + (nint)CpuTopology.CurrentCpu * PerCpuAllocator.UnitSize);
        }
    }

    /// <summary>CPU <paramref name="cpu"/>'s copy.</summary>
    /// <exception cref="ArgumentOutOfRangeException">Not a possible CPU.</exception>
    public ref T this[int cpu]
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        get
        {
            if ((uint)cpu >= (uint)CpuTopology.PossibleCpus)
                ThrowBadCpu(cpu);
            Debug.Assert(_unit0 != 0, "dereferencing a null per-CPU pointer");
            return ref *(T*)(_unit0 + (nint)cpu * PerCpuAllocator.UnitSize);
        }
    }

    /// <summary>Pointer to CPU <paramref name="cpu"/>'s copy.</summary>
    public T* On(int cpu) => (T*)Unsafe.AsPointer(ref this[cpu]);

    /// <summary>The same area seen as <typeparamref name="TOther"/> (both must fit the area).</summary>
    public PerCpuPtr<TOther> Cast<TOther>() where TOther : unmanaged => new(_unit0);

    /// <summary>The area <paramref name="elements"/> elements of <typeparamref name="T"/> further (an element of an array area).</summary>
    public PerCpuPtr<T> Offset(int elements) => new(_unit0 + (nint)elements * sizeof(T));

    /// <summary><c>foreach (ref T v in area)</c>: every possible CPU's copy, CPU 0 first.</summary>
    public Enumerator GetEnumerator() => new(_unit0);

    /// <summary>True when both name the same area (the same <see cref="Address"/>).</summary>
    public bool Equals(PerCpuPtr<T> other) => _unit0 == other._unit0;

    /// <summary>True for a <see cref="PerCpuPtr{T}"/> of the same area.</summary>
    public override bool Equals(object? obj) => obj is PerCpuPtr<T> other && Equals(other);

    /// <summary>A hash of <see cref="Address"/>.</summary>
    public override int GetHashCode() => _unit0.GetHashCode();

    /// <summary>True when both name the same area.</summary>
    public static bool operator ==(PerCpuPtr<T> left, PerCpuPtr<T> right) => left.Equals(right);

    /// <summary>True when they name different areas.</summary>
    public static bool operator !=(PerCpuPtr<T> left, PerCpuPtr<T> right) => !left.Equals(right);

    /// <summary>The address, for logs: <c>percpu 0x7f...</c>.</summary>
    public override string ToString() => $"percpu 0x{_unit0:x}";

    private static void ThrowBadCpu(int cpu) =>
        throw new ArgumentOutOfRangeException(nameof(cpu), cpu, $"CPU numbers run from 0 to {CpuTopology.PossibleCpus - 1}");

    /// <summary>Walks the copies of every possible CPU.</summary>
    public ref struct Enumerator
    {
        private readonly nint _unit0;
        private int _cpu;

        internal Enumerator(nint unit0)
        {
            _unit0 = unit0;
            _cpu = -1;
        }

        /// <summary>Moves to the next CPU; false after the last possible one.</summary>
        public bool MoveNext() => ++_cpu < CpuTopology.PossibleCpus;

        /// <summary>The copy of CPU <see cref="Cpu"/>, by reference.</summary>
        public readonly ref T Current => ref *(T*)(_unit0 + (nint)_cpu * PerCpuAllocator.UnitSize);

        /// <summary>The CPU whose copy <see cref="Current"/> is.</summary>
        public readonly int Cpu => _cpu;
    }
}
