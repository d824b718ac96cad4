using System.Diagnostics.CodeAnalysis;
using System.Runtime.CompilerServices;
using Kmem.Slab;

namespace Kmem;

/// <summary>Reports of misuse. Cold and out of line, so the fast paths stay small.</summary>
internal sealed unsafe partial class SlabCacheCore
{
    [DoesNotReturn]
    [MethodImpl(MethodImplOptions.NoInlining)]
    private void ThrowForeignPointer(void* obj, SlabHeader* slab)
    {
        if (_disposed)
            ThrowDisposed(obj);
        if (obj == null)
            throw new SlabUsageException(Name, 0, $"cache '{Name}': Free(null)");
        if (slab == null)
            slab = LargeBlocks.FindCovering(obj);   // only a large block's first page is in the page map
        if (slab == null || (byte*)obj < slab->Block || (byte*)obj >= slab->Block + slab->BlockSize)
            throw new SlabUsageException(Name, (nint)obj, $"cache '{Name}': 0x{(nint)obj:x} is not held by any slab of this allocator (never allocated, already returned, or foreign memory)");
        string owner = slab->Kind == BlockKind.Large ? "a large kmalloc allocation" : $"cache '{SlabCacheRegistry.Get(slab->CacheIndex).Name}'";
        throw new SlabUsageException(Name, (nint)obj, $"cache '{Name}': 0x{(nint)obj:x} belongs to {owner}, not to this cache");
    }

    [DoesNotReturn]
    [MethodImpl(MethodImplOptions.NoInlining)]
    private void ThrowNotObjectStart(void* obj, SlabHeader* slab)
    {
        long offset = (byte*)obj - (byte*)slab - _layout.ObjectOffset;
        string where = offset < 0 || offset >= (uint)_layout.Span
            ? "the slab's header or tail, not an object"
            : $"{offset % _layout.Stride} bytes into object 0x{(nint)((byte*)obj - offset % _layout.Stride):x}";
        throw new SlabUsageException(Name, (nint)obj, $"cache '{Name}': 0x{(nint)obj:x} is not the start of an object: it points into {where}");
    }

    [DoesNotReturn]
    [MethodImpl(MethodImplOptions.NoInlining)]
    private void ThrowDisposed(void* obj) => throw Disposed(Name, obj);

    /// <summary>The one form of the use-after-Dispose error, for the core and its handles.</summary>
    internal static ObjectDisposedException Disposed(string name, void* obj) =>
        new(name, obj == null
            ? $"cache '{name}' is disposed"
            : $"cache '{name}' is disposed: cannot free 0x{(nint)obj:x}");

    [DoesNotReturn]
    [MethodImpl(MethodImplOptions.NoInlining)]
    private void ThrowDoubleFree(void* obj, string why) =>
        throw new SlabUsageException(Name, (nint)obj, $"cache '{Name}': double free of object 0x{(nint)obj:x} ({why})");
}
