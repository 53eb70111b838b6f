"""Networks: backbones (images -> feature maps) and pooling heads (feature maps -> vectors)."""
