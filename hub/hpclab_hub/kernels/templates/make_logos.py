"""Draw kernels/templates/<name>/logo-64x64.png and logo-32x32.png.

Run: .venv/bin/python hub/hpclab_hub/kernels/templates/make_logos.py
"""

from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

LOGOS = {"mri": ("MRI", (41, 98, 155)), "josephson": ("JJ", (176, 84, 30)), "dl": ("DL", (94, 53, 145))}

for name, (text, colour) in LOGOS.items():
    for size in (64, 32):
        image = Image.new("RGBA", (size, size), (0, 0, 0, 0))
        draw = ImageDraw.Draw(image)
        draw.rounded_rectangle((0, 0, size - 1, size - 1), radius=size // 6, fill=colour)
        font = ImageFont.load_default(size=size * (0.42 if len(text) == 2 else 0.34))
        draw.text((size / 2, size / 2), text, fill="white", font=font, anchor="mm")
        image.save(Path(__file__).with_name(name) / f"logo-{size}x{size}.png", optimize=True)
