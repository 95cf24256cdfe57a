"""Test files made on the spot (no binary is committed): PDFs, DOCX files and hostile variants."""

from __future__ import annotations

import io
import zipfile
import zlib


def _pdf_text(text: str) -> str:
    return text.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")


def make_pdf(pages: list[list[str]], *, password: str | None = None) -> bytes:
    """A PDF whose page i holds the lines pages[i] (Helvetica; an empty list is a page without text)."""
    from pypdf import PdfWriter
    from pypdf.generic import DecodedStreamObject, DictionaryObject, NameObject

    writer = PdfWriter()
    font = DictionaryObject(
        {
            NameObject("/Type"): NameObject("/Font"),
            NameObject("/Subtype"): NameObject("/Type1"),
            NameObject("/BaseFont"): NameObject("/Helvetica"),
        }
    )
    font_ref = writer._add_object(font)
    for lines in pages:
        page = writer.add_blank_page(width=612, height=792)
        ops = ["BT", "/F1 11 Tf", "14 TL", "72 740 Td"]
        for line in lines:
            ops.append(f"({_pdf_text(line)}) Tj T*")
        ops.append("ET")
        stream = DecodedStreamObject()
        stream.set_data("\n".join(ops).encode("latin-1"))
        page[NameObject("/Contents")] = writer._add_object(stream)
        page[NameObject("/Resources")] = DictionaryObject(
            {NameObject("/Font"): DictionaryObject({NameObject("/F1"): font_ref})}
        )
    if password is not None:
        writer.encrypt(user_password=password, owner_password=password + "-owner", algorithm="AES-128")
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def raw_pdf(objects: list[bytes]) -> bytes:
    """A PDF of these objects (numbered from 1; the first is the catalog) with a correct xref table."""
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += f"{number} 0 obj\n".encode() + body + b"\nendobj\n"
    xref = len(out)
    out += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode()
    for offset in offsets:
        out += f"{offset:010d} 00000 n \n".encode()
    out += f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    return bytes(out)


def pdf_of_many_pages(count: int) -> bytes:
    """A page tree of `count` pages, every one the same page object (small file, huge document)."""
    kids = b" ".join([b"3 0 R"] * count)
    return raw_pdf(
        [
            b"<< /Type /Catalog /Pages 2 0 R >>",
            b"<< /Type /Pages /Count " + str(count).encode() + b" /Kids [" + kids + b"] >>",
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] >>",
        ]
    )


def pdf_with_inflating_stream(inflated_bytes: int) -> bytes:
    """One page whose content stream inflates to `inflated_bytes` (zeros: a few KB per 10 MB compressed)."""
    # A full flush ends a deflate block on a byte boundary with nothing carried over, so one compressed
    # megabyte of zeros can be repeated as is: a gigabyte costs a megabyte and no compression time.
    # (Its checksum is not the whole stream's: a reader gives up at its size bound long before.)
    compressor = zlib.compressobj(9)
    chunk = b"\x00" * (1024 * 1024)
    head = compressor.compress(chunk) + compressor.flush(zlib.Z_FULL_FLUSH)
    block = compressor.compress(chunk) + compressor.flush(zlib.Z_FULL_FLUSH)
    data = head + block * (inflated_bytes // len(chunk) - 1) + compressor.flush()
    return raw_pdf(
        [
            b"<< /Type /Catalog /Pages 2 0 R >>",
            b"<< /Type /Pages /Count 1 /Kids [3 0 R] >>",
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R >>",
            b"<< /Length " + str(len(data)).encode() + b" /Filter /FlateDecode >>\nstream\n" + data + b"\nendstream",
        ]
    )


def make_docx(paragraphs: list[tuple[str, str | None]]) -> bytes:
    """A DOCX of (text, style) paragraphs; a style such as "Heading 1" makes a heading."""
    import docx

    document = docx.Document()
    for text, style in paragraphs:
        if style is not None and style.startswith("Heading"):
            document.add_heading(text, level=int(style.split()[-1]))
        else:
            document.add_paragraph(text)
    out = io.BytesIO()
    document.save(out)
    return out.getvalue()


def zip_bomb_docx(inflated_bytes: int) -> bytes:
    """A zip shaped like a DOCX whose document part inflates to `inflated_bytes`."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
        archive.writestr("[Content_Types].xml", "<Types/>")
        with archive.open("word/document.xml", "w", force_zip64=True) as member:
            chunk = b" " * (1024 * 1024)
            for _ in range(inflated_bytes // len(chunk)):
                member.write(chunk)
    return out.getvalue()


DOCX = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"


def bad_files() -> dict[str, tuple[bytes, str, str]]:
    """Every file the issue names as unreadable: (content, declared type, words of the reason)."""
    return {
        "corrupt PDF": (b"%PDF-1.7\n" + b"\x8f garbage " * 200 + b"\n%%EOF\n", "application/pdf", "corrupt"),
        "truncated PDF": (make_pdf([["complete sentence on a page"]] * 3)[:-400], "application/pdf", "truncated"),
        "password-protected PDF": (make_pdf([["secret"]], password="pw"), "application/pdf", "password"),
        "image-only PDF": (make_pdf([[], []]), "application/pdf", "no extractable text"),
        "PDF of 100,000 pages": (pdf_of_many_pages(100_000), "application/pdf", "100000 pages"),
        "DOCX that is not a zip": (b"PK\x03\x04 but then nothing of a zip", DOCX, "not a readable zip"),
        "zip without a document part": (
            zip_bomb_docx(0).replace(b"word/document.xml", b"word/elsewhere.xm"),
            DOCX,
            "not a DOCX",
        ),
        "zip bomb": (zip_bomb_docx(200 * 1024 * 1024), DOCX, "zip bomb"),
        "empty text": (b"  \n\n  \n", "text/plain", "no extractable text"),
        # pypdf stops inflating at its own bound; whichever bound stops it, the file is unreadable.
        "PDF stream inflating to 1 GB": (pdf_with_inflating_stream(1024 * 1024 * 1024), "application/pdf", ""),
    }
